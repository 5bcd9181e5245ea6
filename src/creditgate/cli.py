"""The ``creditgate`` command: serve, and admin/quota commands against a running sidecar.

Admin and quota commands speak gRPC to ``--target`` (``CREDITGATE_TARGET``, default
127.0.0.1:50051) and print the answer as JSON. Amounts on the command line are decimals in whole
units (``grant acct bonus 50`` grants 50 credits); answers are in micro-units.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from creditgate.domain.errors import ConfigError
from creditgate.domain.money import to_micro

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from google.protobuf.message import Message

    from creditgate.settings import Settings

DEFAULT_TARGET = "127.0.0.1:50051"


def _micro(text: str) -> int:
    try:
        return to_micro(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cap(text: str) -> int:
    return -1 if text.lower() in ("none", "-1", "unlimited") else _micro(text)


def _when(text: str) -> int:
    """Unix ms, or an ISO 8601 time (UTC if no offset)."""
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = f"{text!r} is neither unix ms nor an ISO 8601 time"
        raise argparse.ArgumentTypeError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _attrs(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            msg = f"--attr takes key=value, got {pair!r}"
            raise SystemExit(msg)
        out[key] = value
    return out


# --- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from creditgate.settings import Settings  # noqa: PLC0415 - keep client commands light

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
    from creditgate.server import serve  # noqa: PLC0415

    runner: Callable[[Any], Any] = asyncio.run
    if settings.uvloop:
        try:
            import uvloop  # noqa: PLC0415

            runner = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
    from creditgate.ledger.store import LedgerError  # noqa: PLC0415

    try:
        runner(serve(settings, demo=demo))
    except (ConfigError, LedgerError) as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


# --- client commands -----------------------------------------------------------------------


async def _call(args: argparse.Namespace, service: str, method: str, request: Message) -> Message:
    from creditgate import cli_tls  # noqa: PLC0415
    from creditgate.v1 import admin_pb2_grpc, quota_pb2_grpc  # noqa: PLC0415

    stubs = {"quota": quota_pb2_grpc.QuotaServiceStub, "admin": admin_pb2_grpc.AdminServiceStub}
    async with cli_tls.channel(args) as channel:
        stub = stubs[service](channel)
        metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None
        response: Message = await getattr(stub, method)(request, timeout=10, metadata=metadata)
        return response


def _client(
    service: str,
    method: str,
    build: Callable[[argparse.Namespace], Message],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import grpc  # noqa: PLC0415
        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        try:
            response = asyncio.run(_call(args, service, method, build(args)))
        except grpc.aio.AioRpcError as exc:
            print(f"creditgate: {exc.code().name}: {exc.details()}", file=sys.stderr)  # noqa: T201
            return 1
        except ConfigError as exc:
            print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        print(  # noqa: T201 - the command's output
            json.dumps(
                MessageToDict(
                    response,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                ),
                indent=2,
            )
        )
        return 0

    return run


Sub = argparse._SubParsersAction  # noqa: SLF001 - argparse exposes no public name for it
_STATUS = ("active", "trial", "suspended")


def _status(name: str | None) -> str | None:
    """The proto enum name for a status (protobuf accepts enum names)."""
    return f"ACCOUNT_STATUS_{name.upper()}" if name else None


def _add_account_commands(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import admin_pb2  # noqa: PLC0415

    status = _STATUS
    account = sub.add_parser("account", help="create, show or change accounts")
    acc = account.add_subparsers(dest="op", required=True)
    p = acc.add_parser("create", help="create an account on a plan")
    p.add_argument("account_id")
    p.add_argument("--plan", required=True)
    p.add_argument("--anchor-day", type=int, default=0, help="renewal day 1-31 (default today)")
    p.add_argument("--status", choices=status, default="active")
    p.set_defaults(
        func=_client(
            "admin",
            "CreateAccount",
            lambda a: admin_pb2.CreateAccountRequest(
                account_id=a.account_id,
                plan_id=a.plan,
                anchor_day=a.anchor_day,
                status=_status(a.status),
            ),
        )
    )
    p = acc.add_parser("get", help="show an account and its caps")
    p.add_argument("account_id")
    p.set_defaults(
        func=_client(
            "admin", "GetAccount", lambda a: admin_pb2.GetAccountRequest(account_id=a.account_id)
        )
    )
    p = acc.add_parser("update", help="change plan, status or renewal day")
    p.add_argument("account_id")
    p.add_argument("--plan", default="")
    p.add_argument("--anchor-day", type=int, default=0)
    p.add_argument("--status", choices=status)
    p.set_defaults(
        func=_client(
            "admin",
            "UpdateAccount",
            lambda a: admin_pb2.UpdateAccountRequest(
                account_id=a.account_id,
                plan_id=a.plan,
                anchor_day=a.anchor_day,
                status=_status(a.status),
            ),
        )
    )
    p = acc.add_parser("settings", help="set a pool's monthly cap or enable/disable it")
    p.add_argument("account_id")
    p.add_argument("pool_id")
    p.add_argument("--cap", type=_cap, help="decimal money per period, or 'none'")
    p.add_argument("--enable", dest="enabled", action="store_true", default=None)
    p.add_argument("--disable", dest="enabled", action="store_false")
    p.set_defaults(
        func=_client(
            "admin",
            "SetPoolSettings",
            lambda a: admin_pb2.SetPoolSettingsRequest(
                account_id=a.account_id, pool_id=a.pool_id, cap=a.cap, enabled=a.enabled
            ),
        )
    )
    p = acc.add_parser("clock", help="advance an account's test clock (test-clock servers)")
    p.add_argument("account_id")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seconds", type=int, default=0)
    g.add_argument("--to", type=_when, default=0, help="unix ms or ISO time")
    p.set_defaults(
        func=_client(
            "admin",
            "AdvanceTestClock",
            lambda a: admin_pb2.AdvanceTestClockRequest(
                account_id=a.account_id, seconds=a.seconds, to_unix_ms=a.to
            ),
        )
    )


def _add_money_commands(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import admin_pb2, quota_pb2  # noqa: PLC0415

    p = sub.add_parser("grant", help="grant credits (grant pool) or money (balance pool)")
    p.add_argument("account_id")
    p.add_argument("pool_id")
    p.add_argument("amount", type=_micro, help="decimal, in the pool's unit")
    p.add_argument("--grant-id", default="", help="idempotency key (default: generated)")
    p.add_argument("--expires", type=_when, default=0, help="unix ms or ISO time")
    p.add_argument("--note", default="")
    p.set_defaults(
        func=_client(
            "admin",
            "Grant",
            lambda a: admin_pb2.GrantRequest(
                account_id=a.account_id,
                pool_id=a.pool_id,
                amount=a.amount,
                grant_id=a.grant_id or os.urandom(8).hex(),
                expires_at_unix_ms=a.expires,
                note=a.note,
            ),
        )
    )

    p = sub.add_parser("balance", help="every pool of an account")
    p.add_argument("account_id")
    p.set_defaults(
        func=_client(
            "quota", "GetBalance", lambda a: quota_pb2.GetBalanceRequest(account_id=a.account_id)
        )
    )
    p = sub.add_parser("refund", help="return a charge, fully or partly")
    p.add_argument("account_id")
    p.add_argument("request_id")
    p.add_argument("-q", "--quantity", type=int, default=0, help="units (0: all)")
    p.add_argument("--refund-id", default="")
    p.set_defaults(
        func=_client(
            "quota",
            "Refund",
            lambda a: quota_pb2.RefundRequest(
                account_id=a.account_id,
                request_id=a.request_id,
                quantity=a.quantity,
                refund_id=a.refund_id or os.urandom(8).hex(),
            ),
        )
    )


def _add_quota_commands(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import quota_pb2  # noqa: PLC0415

    p = sub.add_parser("check", help="CheckAndConsume: may this action run now? charge it")
    p.add_argument("account_id")
    p.add_argument("action")
    p.add_argument("-q", "--quantity", type=int, default=1)
    p.add_argument("-a", "--attr", action="append", default=[], help="key=value (repeatable)")
    p.add_argument("--request-id", default="")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(
        func=_client(
            "quota",
            "CheckAndConsume",
            lambda a: (quota_pb2.CheckAndConsumeRequest)(
                account_id=a.account_id,
                action=a.action,
                quantity=a.quantity,
                attributes=_attrs(a.attr),
                request_id=a.request_id,
                dry_run=a.dry_run,
            ),
        )
    )

    p = sub.add_parser("reserve", help="hold an estimate")
    p.add_argument("account_id")
    p.add_argument("action")
    p.add_argument("-q", "--quantity", type=int, default=1)
    p.add_argument("-a", "--attr", action="append", default=[])
    p.add_argument("--reservation-id", default="")
    p.add_argument("--ttl", type=int, default=0, help="seconds")
    p.set_defaults(
        func=_client(
            "quota",
            "Reserve",
            lambda a: quota_pb2.ReserveRequest(
                account_id=a.account_id,
                action=a.action,
                quantity=a.quantity,
                attributes=_attrs(a.attr),
                reservation_id=a.reservation_id,
                ttl_seconds=a.ttl,
            ),
        )
    )

    p = sub.add_parser("settle", help="charge the actual quantity against a hold")
    p.add_argument("account_id")
    p.add_argument("reservation_id")
    p.add_argument("-q", "--quantity", type=int, required=True)
    p.set_defaults(
        func=_client(
            "quota",
            "Settle",
            lambda a: quota_pb2.SettleRequest(
                account_id=a.account_id, reservation_id=a.reservation_id, quantity=a.quantity
            ),
        )
    )

    p = sub.add_parser("release", help="drop a hold")
    p.add_argument("account_id")
    p.add_argument("reservation_id")
    p.set_defaults(
        func=_client(
            "quota",
            "Release",
            lambda a: quota_pb2.ReleaseRequest(
                account_id=a.account_id, reservation_id=a.reservation_id
            ),
        )
    )


def _plans(args: argparse.Namespace) -> int:
    from creditgate.domain.catalog import load_catalog  # noqa: PLC0415
    from creditgate.domain.money import format_micro  # noqa: PLC0415

    try:
        catalog = load_catalog(args.config)
    except ConfigError as exc:
        print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    for plan in catalog.plans.values():
        print(f"{plan.id}: {plan.description}".rstrip(": "))  # noqa: T201
        for pool in plan.pools:
            amount = f" {format_micro(pool.amount)}/{pool.period}" if pool.amount else ""
            print(f"  {pool.id:<12} {pool.kind:<9} {pool.balance_unit}{amount}")  # noqa: T201
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="creditgate", description=__doc__.splitlines()[0])
    root.add_argument(
        "--target",
        default=os.environ.get("CREDITGATE_TARGET", DEFAULT_TARGET),
        help="sidecar address for client commands",
    )
    from creditgate import cli_tls  # noqa: PLC0415

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
    p = sub.add_parser("plans", help="list the plans of a plans file")
    p.add_argument("--config", default=os.environ.get("CREDITGATE_CONFIG", "examples/demo.yaml"))
    p.set_defaults(func=_plans)
    _add_account_commands(sub)
    _add_money_commands(sub)
    _add_quota_commands(sub)
    from creditgate import cli_auth  # noqa: PLC0415

    cli_auth.register(sub)
    try:
        from creditgate import cli_ledger  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the ledger commands ship with the ledger
        pass
    else:
        cli_ledger.register(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ValueError as exc:  # pydantic's ValidationError is one
        return _bad_settings(exc)
    return result


def _bad_settings(exc: ValueError) -> int:
    """A bad CREDITGATE_ variable: one line naming it, exit 2 (not a traceback)."""
    from pydantic import ValidationError  # noqa: PLC0415 - keep client commands light

    from creditgate.settings import Settings, describe_error  # noqa: PLC0415

    if not isinstance(exc, ValidationError) or exc.title != Settings.__name__:
        raise exc
    print(f"creditgate: {describe_error(exc)}", file=sys.stderr)  # noqa: T201 - CLI output
    return 2


if __name__ == "__main__":
    sys.exit(main())
