"""The client commands of ``creditgate``: account, grant, balance, refund, check, reserve, ...

Each speaks gRPC to ``--target`` and prints the answer as aligned text, amounts in their units
(``cli_render``), or with ``--json`` as the proto's JSON mapping in micro-units. Amounts on
the command line are decimals in the pool's unit (``grant acct bonus 50`` grants 50 credits).

Exit codes: 0 done (``check``/``reserve``: allowed); 2 ``check``/``reserve`` denied (the
decision is printed); 1 the sidecar answered with an error (``creditgate: STATUS: message`` on
stderr, with a hint naming the command that fixes it); 3 the command could not run (TLS files,
settings); 64 the command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
from typing import TYPE_CHECKING

from creditgate.domain.errors import ConfigError
from creditgate.domain.money import to_micro

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import grpc
    from google.protobuf.message import Message

__all__ = [
    "DENIED", "FAILED", "LOCAL_ERROR", "amount", "cap", "client", "emit", "pair", "parser", "when",
]  # fmt: skip

FAILED = 1
_DEADLINE_S = 5.0  # a command gives up after this, retries included
_NOT_IDEMPOTENT = frozenset({"AdvanceTestClock", "CreateAccount"})
DENIED = 2
LOCAL_ERROR = 3
Sub = argparse._SubParsersAction  # noqa: SLF001 - argparse exposes no public name for it


def emit(lines: Sequence[str]) -> None:
    """Print the command's output; a reader that went away (``| head``) is not an error."""
    try:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush at exit; point stdout at nothing instead.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def amount(text: str) -> int:
    """A positive decimal in the pool's unit, e.g. ``50`` or ``4.99``."""
    try:
        value = to_micro(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        msg = f"must be more than 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def at_least_zero(text: str) -> int:
    """A decimal in the pool's unit, 0 or more, e.g. ``0`` or ``4.99``."""
    return 0 if text.strip() in ("0", "0.0", "0.00") else amount(text)


def cap(text: str) -> int:
    """A decimal amount of money per period, or none/unlimited for no cap."""
    if text.lower() in ("none", "-1", "unlimited"):
        return -1
    try:
        return to_micro(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole(text: str) -> int:
    """A whole number in ASCII digits (``int`` alone also takes ``1_000`` and other scripts')."""
    if re.fullmatch(r"-?[0-9]+", text) is None:
        msg = f"{text!r} is not a whole number (digits 0-9)"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def when(text: str) -> int:
    """Unix ms, or an ISO 8601 time (UTC if no offset)."""
    if re.fullmatch(r"[0-9]+", text) is not None:
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = f"{text!r} is neither unix ms nor an ISO 8601 time"
        raise argparse.ArgumentTypeError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        msg = f"takes key=value, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return key, value


# What fixes a refused call: (command, '' any; status, '' any; a pattern of the details; the
# hint, formatted with the account, the purchase id and the target). The first match answers.
_HINTS = (
    ("", "NOT_FOUND", r"^account ",
     ("create it: creditgate account create {account} --plan PLAN (creditgate plans lists the "
     "plans)")),
    ("", "NOT_FOUND", "reservation",
     "reservations are made by: creditgate reserve {account} ACTION -q QUANTITY"),
    ("", "NOT_FOUND", "pool", "the account's pools: creditgate balance {account}"),
    ("refund", "NOT_FOUND", "", "refund takes the request id that creditgate check printed"),
    ("purchase", "UNAVAILABLE", "purchase_id",
     "retry with the same id (it cannot charge twice): --id {id}"),
    ("purchase", "", "declined",
     "update the saved payment method at the provider, then purchase with a new --id"),
    ("grant", "", "needs a grant or balance pool",
     "grant into a grant or balance pool: creditgate balance {account} shows the kinds"),
    ("credits", "", "give pool_id", "name one: creditgate credits {account} --pool POOL"),
    ("", "UNAVAILABLE", "(?i)connect",
     ("is a sidecar listening on {target}? start one with: creditgate serve --embedded (or make "
     "run); --target / CREDITGATE_TARGET name another")),
    ("", "UNAUTHENTICATED", "",
     "pass --token or set CREDITGATE_TOKEN; an admin makes one with: creditgate token create"),
    ("", "PERMISSION_DENIED", "",
     "this needs a token with another role: creditgate token list shows the roles"),
)  # fmt: skip


def _hint(command: str, code: grpc.StatusCode, details: str, args: argparse.Namespace) -> str:
    """The command that fixes a refused call, or ''."""
    for cmd, status, pattern, hint in _HINTS:
        if cmd in ("", command) and status in ("", code.name) and re.search(pattern, details):
            return hint.format(
                account=getattr(args, "account_id", "ACCOUNT"),
                id=getattr(args, "id", ""),
                target=getattr(args, "target", ""),
            )
    return ""


async def _call(args: argparse.Namespace, service: str, method: str, request: Message) -> Message:
    """One call through the SDK: retried under its id on UNAVAILABLE / DEADLINE_EXCEEDED."""
    from creditgate.client import AsyncClient  # noqa: PLC0415
    from creditgate.wiring.cli import tls as cli_tls  # noqa: PLC0415

    tls = cli_tls.client_tls(args)
    async with AsyncClient(args.target, token=args.token, tls=tls, deadline=_DEADLINE_S) as client:
        stub = getattr(client, service)  # quota, admin or credits
        once = method in _NOT_IDEMPOTENT  # a retry after an unknown outcome could apply it twice
        response: Message = await client.call(getattr(stub, method), request, idempotent=not once)
        return response


def _show(response: Message, *, as_json: bool) -> None:
    if as_json:
        import json  # noqa: PLC0415

        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        shown = MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        emit(json.dumps(shown, indent=2).splitlines())
        return
    from creditgate.wiring.cli.render import render  # noqa: PLC0415

    emit(render(response))


def client(
    service: str, method: str, build: Callable[[argparse.Namespace], Message]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import grpc  # noqa: PLC0415

        request = build(args)
        # No method given: the request names it (SetAutoTopUpRequest -> SetAutoTopUp).
        rpc = method or request.DESCRIPTOR.name.removesuffix("Request")
        try:
            response = asyncio.run(_call(args, service, rpc, request))
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            print(f"creditgate: {exc.code().name}: {details}", file=sys.stderr)  # noqa: T201
            hint = _hint(args.command, exc.code(), details, args)
            if hint:
                print(f"hint: {hint}", file=sys.stderr)  # noqa: T201
            return FAILED
        except ConfigError as exc:
            print(f"creditgate: {exc}", file=sys.stderr)  # noqa: T201
            return LOCAL_ERROR
        _show(response, as_json=args.json)
        denied = response.DESCRIPTOR.name == "Decision" and not getattr(response, "allowed")  # noqa: B009
        return DENIED if denied else 0

    return run


def parser(sub: Sub[argparse.ArgumentParser], name: str, text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=text, description=text)
    p.add_argument("--json", action="store_true", help="print the proto's JSON (micro-units)")
    return p
