"""``creditgate worker | migrate | reconcile``: the ledger's command-line subcommands.

``creditgate.wiring.cli`` calls ``register(subparsers)``; each subcommand sets ``func``, which
takes the parsed arguments and returns the exit status: 0, 1 when reconcile found differences,
2 when the command could not run or reconcile was given an account that exists nowhere (with a
one-line reason, never a traceback). Settings come from the
environment (``CREDITGATE_REDIS_URL``, ``CREDITGATE_LEDGER_URL``, ``CREDITGATE_WORKER_*``...);
``--data-dir`` sets ``CREDITGATE_DATA_DIR``. Without a Redis URL they use the embedded Redis of
the data dir when ``serve --embedded`` runs there, so they find it as ``make run`` left it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# The modules behind these commands load only when one runs, so `creditgate --help` and the
# client commands start fast.
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine
    from typing import Any

    from redis.asyncio import Redis

    from creditgate.ledger.reconcile import CheckReport
    from creditgate.wiring.settings import Settings

    Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]

EXIT_DIFFERENCES = 1
EXIT_CANNOT_RUN = 2


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
    r = subparsers.add_parser(
        "reconcile",
        help="compare Redis with the ledger, or repair it",
        description="Exit status: 0 Redis and the ledger agree (accounts only in the ledger, which"
        " Redis lost and loads again on first use, are listed but agree), 1 they differ, 2 could"
        " not run, or a named ACCOUNT is neither in Redis nor in the ledger.",
    )
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--check", action="store_true", help="report differences; exit 1 if there are any"
    )
    mode.add_argument(
        "--repair",
        action="store_true",
        help="rebuild the named accounts (default: all) from the ledger",
    )
    r.add_argument(
        "accounts",
        nargs="*",
        metavar="ACCOUNT",
        help="the accounts to check or repair (default: all); one neither in Redis nor in the"
        " ledger is exit 2",
    )
    r.set_defaults(func=cmd_reconcile)
    for p in (w, m, r):
        p.add_argument(
            "--data-dir",
            type=Path,
            help="the data dir of `serve` (default CREDITGATE_DATA_DIR, var): its embedded Redis"
            " and SQLite ledger",
        )


def redis_url(settings: Settings) -> str:
    """The Redis to use: CREDITGATE_REDIS_URL, else the data dir's embedded Redis if it runs.

    The default URL is used only when neither the URL nor the data dir was given and no embedded
    Redis listens in the default data dir.
    """
    from creditgate.wiring.embedded.redis import socket_path  # noqa: PLC0415

    given = settings.model_fields_set
    if "redis_url" in given and settings.redis_url != "embedded":
        return settings.redis_url
    redis_dir = settings.embedded_redis_dir()
    sock = socket_path(redis_dir)
    if sock is not None and sock.exists():
        return f"unix://{sock}?db=0"
    if "redis_url" not in given and "data_dir" not in given:
        return settings.redis_url
    where = f"no {sock}" if sock else "its path is too long for a socket"
    msg = (
        f"no embedded Redis runs in the data dir {settings.data_dir} ({where}): start"
        " `creditgate serve --embedded` there, or set CREDITGATE_REDIS_URL"
    )
    raise CommandError(msg)


def _redis(settings: Settings) -> Redis:
    from creditgate.domain.errors import ConfigError  # noqa: PLC0415
    from creditgate.driver.cluster import cluster_client  # noqa: PLC0415
    from creditgate.driver.connect import redis_client  # noqa: PLC0415

    try:
        connect = cluster_client if settings.redis_cluster else redis_client
        return connect(redis_url(settings), timeout=settings.redis_timeout_seconds)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _main(command: Command, args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError  # noqa: PLC0415

    from creditgate.ledger.open import without_password  # noqa: PLC0415
    from creditgate.ledger.store import LedgerError  # noqa: PLC0415
    from creditgate.wiring.settings import Settings  # noqa: PLC0415

    overrides: dict[str, Any] = {}  # everything else from the environment
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(command(settings, args))
    except CommandError as exc:
        reason = str(exc)
    except RedisError as exc:
        reason = f"Redis at {_safe(settings)}: {type(exc).__name__}: {exc}"
    except (LedgerError, sqlite3.Error) as exc:
        reason = f"ledger {without_password(settings.ledger())}: {exc}"
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    one_line = " ".join(reason.split())
    print(f"creditgate {args.command}: could not run: {one_line}", file=sys.stderr)  # noqa: T201
    return EXIT_CANNOT_RUN


def _safe(settings: Settings) -> str:
    """The Redis URL for a message, without a password."""
    from creditgate.ledger.open import without_password  # noqa: PLC0415

    try:
        return without_password(redis_url(settings))
    except CommandError:
        return without_password(settings.redis_url)


def cmd_worker(args: argparse.Namespace) -> int:
    return _main(_worker, args)


def cmd_migrate(args: argparse.Namespace) -> int:
    return _main(_migrate, args)


def cmd_reconcile(args: argparse.Namespace) -> int:
    return _main(_reconcile, args)


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from creditgate.ledger.open import open_ledger  # noqa: PLC0415

    redis = _redis(settings)
    store = await open_ledger(settings.ledger(), migrate=args.migrate)
    try:
        from creditgate.wiring.consumers import Consumers  # noqa: PLC0415

        consumers = Consumers(settings, redis, store)
        await consumers.setup()
        if args.burst:
            n = await consumers.drain()
            print(f"applied {n} events")  # noqa: T201 - CLI output
        else:
            await consumers.run()
    finally:
        await store.close()
        await redis.aclose()
    return 0


async def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from creditgate.ledger.open import open_ledger  # noqa: PLC0415

    store = await open_ledger(settings.ledger())
    try:
        version = await store.migrate()
    finally:
        await store.close()
    print(f"ledger schema at version {version}")  # noqa: T201 - CLI output
    return 0


def _existing_ledger(settings: Settings) -> str:
    """The ledger's URL, once it is known to exist (reconcile never creates one)."""
    from creditgate.ledger.sqlite import sqlite_path  # noqa: PLC0415

    url = settings.ledger()
    if not url:
        msg = "no ledger: CREDITGATE_LEDGER_URL is empty"
        raise CommandError(msg)
    if url.startswith("sqlite:"):
        try:
            path = sqlite_path(url)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if path != ":memory:" and not Path(path).exists():
            msg = f"no ledger at {path}: give --data-dir or CREDITGATE_LEDGER_URL"
            raise CommandError(msg)
    return url


async def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from creditgate.engine.keys import KeySpace  # noqa: PLC0415
    from creditgate.ledger.consumer import GROUP  # noqa: PLC0415
    from creditgate.ledger.open import open_ledger  # noqa: PLC0415
    from creditgate.ledger.reconcile import Reconciler  # noqa: PLC0415
    from creditgate.worker import streams  # noqa: PLC0415

    redis = _redis(settings)  # connects on first use
    try:
        store = await open_ledger(_existing_ledger(settings))
    except ValueError as exc:  # a URL of no known kind
        raise CommandError(str(exc)) from exc
    keys = KeySpace(settings.key_prefix, settings.shards)
    try:
        await redis.ping()  # an unreachable Redis is reported before any work
        rec = Reconciler(redis, store, keys)
        names = args.accounts or None
        if names and (unknown := await rec.nowhere(names)):
            listed = ", ".join(repr(a) for a in unknown)
            msg = f"no account {listed} in Redis or in the ledger: check the name"
            raise CommandError(msg)
        if args.repair:
            n = await rec.repair(names)
            print(f"rebuilt {n} accounts from the ledger")  # noqa: T201 - CLI output
            return 0
        report = await rec.inspect(names)
        behind = [
            s for s in keys.streams() if await streams.oldest_unapplied(redis, s, GROUP) is not None
        ]
    finally:
        await store.close()
        await redis.aclose()
    return _print_report(report, behind)


def _print_report(report: CheckReport, behind: list[str]) -> int:
    out = sys.stdout
    for account in report.only_in_ledger:
        out.write(f"account {account}: only in ledger (rehydrates on first use)\n")
    for account, diffs in report.differences.items():
        out.write(f"account {account}: {len(diffs)} difference(s)\n")
        for d in diffs:
            out.write(f"  {d}\n")
    if behind:
        out.write(
            f"note: the worker has not applied every event yet ({len(behind)} stream(s));"
            " differences may be events in flight: check again once it caught up\n"
        )
    lost = len(report.only_in_ledger)
    if report.differences:
        out.write(f"{len(report.differences)} account(s) differ\n")
        return EXIT_DIFFERENCES
    out.write(
        f"Redis and the ledger agree; {lost} account(s) only in ledger (rehydrate on first use)\n"
        if lost
        else "Redis and the ledger agree\n"
    )
    return 0
