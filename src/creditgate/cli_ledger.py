"""``creditgate worker | migrate | reconcile``: the ledger's command-line subcommands.

``creditgate.cli`` calls ``register(subparsers)``; each subcommand sets ``func``, which takes the
parsed arguments and returns the exit status. Settings come from the environment
(``CREDITGATE_REDIS_URL``, ``CREDITGATE_LEDGER_URL``, ``CREDITGATE_WORKER_*``...).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

# The modules behind these commands load only when one runs, so `creditgate --help` and the
# client commands start fast.
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine
    from typing import Any

    from redis.asyncio import Redis

    from creditgate.ledger.store import LedgerStore
    from creditgate.settings import Settings
    from creditgate.worker.reconcile import Difference
    from creditgate.worker.worker import Worker

    Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]

EXIT_DRIFT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class CommandError(RuntimeError):
    """A problem the user must fix; printed without a traceback."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ledger subcommands to the top-level parser of ``creditgate``."""
    w = subparsers.add_parser("worker", help="move events from Redis into the ledger")
    w.add_argument(
        "--once",
        "--burst",
        dest="burst",
        action="store_true",
        help="apply everything there is, then exit",
    )
    w.add_argument("--migrate", action="store_true", help="run the ledger migrations first")
    w.set_defaults(func=cmd_worker)
    m = subparsers.add_parser("migrate", help="create or upgrade the ledger schema")
    m.set_defaults(func=cmd_migrate)
    r = subparsers.add_parser("reconcile", help="compare Redis with the ledger, or repair it")
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--check", action="store_true", help="report differences; exit 1 if there are any"
    )
    mode.add_argument(
        "--repair",
        action="store_true",
        help="rebuild the named accounts (default: all) from the ledger",
    )
    r.add_argument("accounts", nargs="*", metavar="ACCOUNT")
    r.set_defaults(func=cmd_reconcile)


def _redis(settings: Settings) -> Redis:
    from creditgate.domain.errors import ConfigError  # noqa: PLC0415
    from creditgate.engine.connect import redis_client  # noqa: PLC0415

    if settings.redis_url == "embedded":
        msg = (
            "CREDITGATE_REDIS_URL=embedded: the embedded Redis lives inside `creditgate serve`;"
            " the ledger commands need a Redis URL (redis://, rediss:// or unix://)"
        )
        raise CommandError(msg)
    try:
        return redis_client(settings.redis_url, timeout=settings.redis_timeout_seconds)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _main(command: Command, args: argparse.Namespace) -> int:
    from creditgate.ledger.store import LedgerError  # noqa: PLC0415
    from creditgate.settings import Settings  # noqa: PLC0415

    overrides: dict[str, Any] = {}  # everything from the environment
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code = asyncio.run(command(settings, args))
    except CommandError as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_USAGE
    except LedgerError as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_UNAVAILABLE
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    return _main(_worker, args)


def cmd_migrate(args: argparse.Namespace) -> int:
    return _main(_migrate, args)


def cmd_reconcile(args: argparse.Namespace) -> int:
    return _main(_reconcile, args)


def build_worker(redis: Redis, store: LedgerStore, settings: Settings) -> Worker:
    from creditgate.engine.keys import KeySpace  # noqa: PLC0415
    from creditgate.worker.worker import Worker  # noqa: PLC0415

    return Worker(
        redis,
        store,
        KeySpace(settings.key_prefix, settings.shards),
        batch=settings.worker_batch,
        block_ms=settings.worker_block_ms,
        claim_idle_ms=settings.worker_claim_idle_ms,
        name=settings.worker_name,
    )


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from creditgate.ledger.store import open_ledger  # noqa: PLC0415

    redis = _redis(settings)
    store = await open_ledger(settings.ledger(), migrate=args.migrate)
    try:
        worker = build_worker(redis, store, settings)
        await worker.setup()
        if args.burst:
            n = await worker.drain()
            print(f"applied {n} events")  # noqa: T201 - CLI output
        else:
            await worker.run()
    finally:
        await store.close()
        await redis.aclose()
    return 0


async def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from creditgate.ledger.store import open_ledger  # noqa: PLC0415

    store = await open_ledger(settings.ledger())
    try:
        version = await store.migrate()
    finally:
        await store.close()
    print(f"ledger schema at version {version}")  # noqa: T201 - CLI output
    return 0


async def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from creditgate.engine.keys import KeySpace  # noqa: PLC0415
    from creditgate.ledger.store import open_ledger  # noqa: PLC0415
    from creditgate.worker import streams  # noqa: PLC0415
    from creditgate.worker.reconcile import Reconciler  # noqa: PLC0415
    from creditgate.worker.worker import GROUP  # noqa: PLC0415

    redis = _redis(settings)
    store = await open_ledger(settings.ledger())
    keys = KeySpace(settings.key_prefix, settings.shards)
    try:
        rec = Reconciler(redis, store, keys)
        names = args.accounts or None
        if args.repair:
            n = await rec.repair(names)
            print(f"rebuilt {n} accounts from the ledger")  # noqa: T201 - CLI output
            return 0
        report = await rec.check(names)
        behind = [
            s for s in keys.streams() if await streams.oldest_unapplied(redis, s, GROUP) is not None
        ]
    finally:
        await store.close()
        await redis.aclose()
    return _print_report(report, behind)


def _print_report(report: dict[str, list[Difference]], behind: list[str]) -> int:
    out = sys.stdout
    for account, diffs in report.items():
        out.write(f"account {account}: {len(diffs)} difference(s)\n")
        for d in diffs:
            out.write(f"  {d}\n")
    if behind:
        out.write(
            f"note: the worker has not applied every event yet ({len(behind)} stream(s));"
            " differences may be events in flight: check again once it caught up\n"
        )
    out.write(f"{len(report)} account(s) differ\n" if report else "Redis and the ledger agree\n")
    return EXIT_DRIFT if report else 0
