"""The ``creditgate`` command: serve, and admin/quota commands against a running sidecar.

Admin and quota commands (``cli_commands``) speak gRPC to ``--target`` (``CREDITGATE_TARGET``,
default 127.0.0.1:50051) and print the answer as text with amounts in their units, or with
``--json`` as JSON in micro-units; ``cli_client`` says how they print and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from creditgate.domain.catalog import Plan
    from creditgate.wiring.settings import Settings

DEFAULT_TARGET = "127.0.0.1:50051"
USAGE = 64  # sysexits' EX_USAGE: 2 means "denied" to check and reserve
EXIT_CODES = """exit codes:
  0   done; check and reserve: allowed
  1   the sidecar answered with an error (creditgate: STATUS: message, and a hint)
  2   check and reserve: denied; serve, worker, reconcile, plans: could not start
  3   a client command could not run (TLS files, settings)
  64  the command line is wrong
  reconcile --check: 1 means Redis and the ledger differ (see creditgate reconcile --help)"""


# --- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from creditgate.wiring.settings import Settings  # noqa: PLC0415 - keep client commands light

    overrides: dict[str, Any] = {}
    if args.embedded:
        overrides["redis_url"] = "embedded"
    if args.config:
        overrides["config"] = Path(args.config)
    if args.listen:
        overrides["listen"] = args.listen
    if args.test_clock:
        overrides["test_clock"] = True
    settings = Settings(**overrides)
    from creditgate.transport.budget import cap_malloc_arenas  # noqa: PLC0415

    cap_malloc_arenas()  # before gRPC starts its threads (docs/OPERATIONS.md, Limits)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.parent_pid:
        from creditgate.wiring import lifeline  # noqa: PLC0415

        if not lifeline.hold_on(settings.parent_pid):
            gone = f"creditgate: the first server process (pid {settings.parent_pid}) is gone"
            print(gone, file=sys.stderr)  # noqa: T201
            return 1
    with _metrics_dir(settings):
        return _run_server(settings, demo=args.demo)


@contextlib.contextmanager
def _metrics_dir(settings: Settings) -> Iterator[None]:
    """With several server processes, a fresh PROMETHEUS_MULTIPROC_DIR for the sidecar's life.

    The first process makes it before prometheus-client is imported, the others inherit it
    through the environment, and it is removed when the first process ends. A directory the
    caller set is used as it is and kept. With metrics off there is nothing to sum.
    """
    if (
        not settings.metrics_port
        or settings.server_processes() == 1
        or settings.process_index
        or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    ):
        yield
        return
    path = tempfile.mkdtemp(prefix="creditgate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(path, ignore_errors=True)


def _run_server(settings: Settings, *, demo: bool) -> int:
    from creditgate.wiring.server import serve  # noqa: PLC0415

    runner: Callable[[Any], Any] = asyncio.run
    if settings.uvloop:
        try:
            import uvloop  # noqa: PLC0415

            runner = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
    from creditgate.ledger.store import LedgerError  # noqa: PLC0415
    from creditgate.wiring.embedded.redis import EmbeddedRedisError  # noqa: PLC0415

    try:
        runner(serve(settings, demo=demo))
    except (ConfigError, LedgerError) as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except EmbeddedRedisError as exc:
        # Its first line: the lines after it are the tail of the log that line names.
        print(f"creditgate: {str(exc).splitlines()[0]}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


def _plans(args: argparse.Namespace) -> int:
    from creditgate.domain.catalog import load_catalog  # noqa: PLC0415
    from creditgate.domain.wording import amount  # noqa: PLC0415
    from creditgate.wiring.cli.client import emit  # noqa: PLC0415

    try:
        catalog = load_catalog(args.config)
    except ConfigError as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    lines = []
    for plan in catalog.plans.values():
        lines.append(f"{plan.id}: {plan.description}".rstrip(": "))
        for pool in plan.pools:
            size = f" {amount(pool.amount, pool.balance_unit)}/{pool.period}" if pool.amount else ""
            lines.append(f"  {pool.id:<12} {pool.kind:<9}{size or ' ' + pool.balance_unit}")
        lines += _recurring_lines(plan)
        meters = {m for pool in plan.pools for m in (pool.meter, *pool.rates) if m}
        priced = {
            name: a.price({})
            for name, a in sorted(plan.actions.items())
            if a.meter is None or a.meter in meters
        }
        if priced and args.actions:
            lines.append("  actions:")
            lines += [
                f"    {name:<26} {amount(p.unit_cost, p.meter) if p else 'free'}"
                + (f" per {p.per:,}" if p and p.per > 1 else "")
                for name, p in priced.items()
            ]
    emit(lines)
    return 0


def _recurring_lines(plan: Plan) -> list[str]:
    """A plan's recurring charges: what each costs a period, and with each flag that prices it."""
    from creditgate.domain import terms  # noqa: PLC0415
    from creditgate.domain.recurring import cost  # noqa: PLC0415
    from creditgate.domain.wording import amount  # noqa: PLC0415

    lines = []
    for r in plan.recurring:
        meter = plan.actions[r.action].meter or ""
        each = cost(plan, r)
        shown = [amount(each, meter) if each else "free"]
        for flag in sorted(f for f, prices in plan.flag_prices.items() if r.action in prices):
            flagged = cost(terms.apply(plan, terms.Terms(flags=(flag,))), r)
            shown.append(f"{amount(flagged, meter) if flagged else 'free'} with flag {flag}")
        lines.append(
            f"  recurring {r.id}: {r.quantity:,} {r.action} each {r.period}, "
            f"{'; '.join(shown)}; unpaid: {r.on_short}"
        )
    return lines


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="creditgate",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument(
        "--target",
        default=os.environ.get("CREDITGATE_TARGET", DEFAULT_TARGET),
        help="sidecar address for client commands",
    )
    from creditgate.wiring.cli import tls as cli_tls  # noqa: PLC0415

    cli_tls.add_arguments(root)
    root.add_argument(
        "--token",
        default=os.environ.get("CREDITGATE_TOKEN", ""),
        help="bearer token for client commands (default CREDITGATE_TOKEN)",
    )
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gRPC sidecar")
    p.add_argument(
        "--embedded", action="store_true", help="start a private redis-server (no Redis needed)"
    )
    p.add_argument("--demo", action="store_true", help="create one demo account per plan")
    p.add_argument("--config", help="plans file (default CREDITGATE_CONFIG)")
    p.add_argument("--listen", help="host:port (default CREDITGATE_LISTEN, 127.0.0.1:50051)")
    p.add_argument("--test-clock", action="store_true", help="frozen per-account test clocks")
    p.set_defaults(func=_serve)
    p = sub.add_parser("plans", help="list the plans of a plans file, their pools and actions")
    p.add_argument(
        "--config",
        default=os.environ.get("CREDITGATE_CONFIG", "examples/demo.yaml"),
        help="plans file (default CREDITGATE_CONFIG, else examples/demo.yaml)",
    )
    p.add_argument("--actions", action="store_true", help="also list each plan's action prices")
    p.set_defaults(func=_plans)
    from creditgate.wiring.cli import auth as cli_auth  # noqa: PLC0415
    from creditgate.wiring.cli import commands as cli_commands  # noqa: PLC0415  # noqa: PLC0415
    from creditgate.wiring.cli import credits as cli_credits  # noqa: PLC0415

    cli_commands.register(sub)
    cli_credits.register(sub)
    cli_auth.register(sub)
    try:
        from creditgate.wiring.cli import ledger as cli_ledger  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the ledger commands ship with the ledger
        pass
    else:
        cli_ledger.register(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (see ``EXIT_CODES``, printed by ``--help``)."""
    root = parser()
    try:
        args = root.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a wrong command line
        return USAGE if exc.code == 2 else int(exc.code or 0)  # noqa: PLR2004 - argparse's code
    try:
        result: int = args.func(args)
    except ValueError as exc:  # pydantic's ValidationError is one
        return _bad_settings(exc)
    return result


def _bad_settings(exc: ValueError) -> int:
    """A bad CREDITGATE_ variable: one line naming it, exit 2 (not a traceback)."""
    from pydantic import ValidationError  # noqa: PLC0415 - keep client commands light

    from creditgate.wiring.settings import Settings, describe_error  # noqa: PLC0415

    if not isinstance(exc, ValidationError) or exc.title != Settings.__name__:
        raise exc
    print(f"creditgate: {describe_error(exc)}", file=sys.stderr)  # noqa: T201 - CLI output
    return 2


if __name__ == "__main__":
    sys.exit(main())
