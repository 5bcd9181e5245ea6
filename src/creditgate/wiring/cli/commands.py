"""The client commands' arguments: what each command asks for and which RPC it calls.

How they talk to the sidecar, print and exit is ``cli_client``'s; this module only declares.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from creditgate.wiring.cli import terms
from creditgate.wiring.cli.client import (
    amount,
    at_least_zero,
    cap,
    client,
    pair,
    parser,
    when,
    whole,
)

if TYPE_CHECKING:
    import argparse

    from google.protobuf.message import Message

    from creditgate.wiring.cli.client import Sub

__all__ = ["register"]

_STATUS = ("active", "trial", "suspended")
_ACCOUNT = "the account's id, e.g. acct-42"
_ACTION = "the action to charge, as the plans file names it (creditgate plans lists them)"
_QUANTITY = "units of the action: 1 email, 1532 tokens (default 1)"
_ATTR = "key=value attribute the plan's scopes may match, e.g. model=light (repeatable)"


def _status(name: str | None) -> str | None:
    """The proto enum name for a status (protobuf accepts enum names)."""
    return f"ACCOUNT_STATUS_{name.upper()}" if name else None


def _new_id() -> str:
    return os.urandom(8).hex()


def _accounts(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import admin_pb2 as pb  # noqa: PLC0415

    account = sub.add_parser("account", help="create, show or change accounts")
    acc = account.add_subparsers(dest="op", required=True, metavar="OPERATION")
    p = parser(acc, "create", "create an account on a plan")
    p.add_argument("account_id", help="the new account's id: 1-128 of letters, digits, ._:@/+=-")
    p.add_argument("--plan", required=True, help="its plan (creditgate plans lists them)")
    p.add_argument("--anchor-day", type=whole, default=0, help="renewal day 1-31 (default today)")
    p.add_argument("--status", choices=_STATUS, default="active", help="default active")
    terms.options(p)  # its terms from the start (admins: docs/TERMS.md)
    p.set_defaults(func=client("admin", "CreateAccount", lambda a: pb.CreateAccountRequest(
        account_id=a.account_id, plan_id=a.plan, anchor_day=a.anchor_day,
        status=_status(a.status), terms=terms.message(a))))  # fmt: skip
    p = parser(acc, "get", "show an account, its status and its pools' caps")
    p.add_argument("account_id", help=_ACCOUNT)
    p.set_defaults(func=client("admin", "GetAccount", lambda a: pb.GetAccountRequest(
        account_id=a.account_id)))  # fmt: skip
    p = parser(acc, "update", "change an account's plan, status or renewal day")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--plan", default="", help="move it to this plan")
    p.add_argument("--anchor-day", type=whole, default=0, help="new renewal day 1-31")
    p.add_argument("--status", choices=_STATUS, help="new status")
    p.set_defaults(func=client("admin", "UpdateAccount", lambda a: pb.UpdateAccountRequest(
        account_id=a.account_id, plan_id=a.plan, anchor_day=a.anchor_day,
        status=_status(a.status))))  # fmt: skip
    p = parser(acc, "settings", "set a pool's spend cap per period, or turn the pool on or off")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("pool_id", help="the pool, e.g. overage (creditgate balance ACCOUNT lists them)")
    p.add_argument("--cap", type=cap, help="money per period, e.g. 50 for $50; 'none' for no cap")
    p.add_argument("--enable", dest="enabled", action="store_true", default=None, help="turn on")
    p.add_argument("--disable", dest="enabled", action="store_false", help="turn off")
    p.set_defaults(func=client("admin", "SetPoolSettings", lambda a: pb.SetPoolSettingsRequest(
        account_id=a.account_id, pool_id=a.pool_id, cap=a.cap, enabled=a.enabled)))  # fmt: skip
    p = parser(acc, "clock", "advance an account's test clock (servers run with --test-clock)")
    p.add_argument("account_id", help=_ACCOUNT)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seconds", type=whole, default=0, help="move it forward by this many seconds")
    g.add_argument("--to", type=when, default=0, help="move it to this unix ms or ISO 8601 time")
    p.set_defaults(func=client("admin", "AdvanceTestClock", lambda a: pb.AdvanceTestClockRequest(
        account_id=a.account_id, seconds=a.seconds, to_unix_ms=a.to)))  # fmt: skip
    terms.register(acc)


def _autotopup(a: argparse.Namespace) -> Message:
    """GetAutoTopUp without options, SetAutoTopUp with them."""
    from creditgate.v1 import admin_pb2 as pb  # noqa: PLC0415

    change = {
        k: v
        for k, v in (("enabled", a.enabled), ("threshold", a.threshold), ("amount", a.amount),
                     ("monthly_max", a.monthly_max))
        if v is not None
    }  # fmt: skip
    if not change:
        return pb.GetAutoTopUpRequest(account_id=a.account_id, pool_id=a.pool)
    return pb.SetAutoTopUpRequest(account_id=a.account_id, pool_id=a.pool, **change)


def _money(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import admin_pb2, quota_pb2  # noqa: PLC0415

    p = parser(sub, "grant", "add credits to a grant pool, or money to a balance pool")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("pool_id", help="the pool to add to, e.g. bonus")
    p.add_argument(
        "amount", type=amount, help="how much, in the pool's unit: 50, or 4.99 for $4.99"
    )
    p.add_argument("--grant-id", default="", help="idempotency key (default: a new one)")
    p.add_argument("--expires", type=when, default=0, help="unix ms or ISO 8601 (default never)")
    p.add_argument("--note", default="", help="free text kept in the ledger")
    p.set_defaults(func=client("admin", "Grant", lambda a: admin_pb2.GrantRequest(
        account_id=a.account_id, pool_id=a.pool_id, amount=a.amount,
        grant_id=a.grant_id or _new_id(), expires_at_unix_ms=a.expires, note=a.note)))  # fmt: skip
    p = parser(sub, "purchase", "buy credits: charge the saved payment method, add the money")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--amount", type=amount, default=0, help="in USD, e.g. 25 (default: the plan's)")
    p.add_argument("--id", default=_new_id(), help="purchase id; retry with the same one")
    p.set_defaults(func=client("admin", "Purchase", lambda a: admin_pb2.PurchaseRequest(
        account_id=a.account_id, purchase_id=a.id, amount=a.amount)))  # fmt: skip
    p = parser(sub, "autotopup", "show or change auto top-up: buy AMOUNT when below THRESHOLD")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--pool", default="", help="the balance pool (default: the plan's only one)")
    p.add_argument("--on", dest="enabled", action="store_true", default=None, help="turn on")
    p.add_argument("--off", dest="enabled", action="store_false", help="turn off")
    p.add_argument("--threshold", type=at_least_zero, help="top up at or below this, e.g. 10")
    p.add_argument("--amount", type=amount, help="buy this much each time, $5-$100,000")
    p.add_argument("--monthly-max", type=cap, help="most top-ups may spend a month; 'none'")
    p.set_defaults(func=client("admin", "", _autotopup))
    p = parser(sub, "balance", "every pool of an account: balance, spend, cap, next reset")
    p.add_argument("account_id", help=_ACCOUNT)
    p.set_defaults(func=client("quota", "GetBalance", lambda a: quota_pb2.GetBalanceRequest(
        account_id=a.account_id)))  # fmt: skip
    p = parser(sub, "refund", "give back a charge, fully or in part")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("request_id", help="the charge's request id, as check printed it")
    p.add_argument("-q", "--quantity", type=whole, default=0, help="units to refund (default all)")
    p.add_argument("--refund-id", default="", help="idempotency key (default: a new one)")
    p.set_defaults(func=client("quota", "Refund", lambda a: quota_pb2.RefundRequest(
        account_id=a.account_id, request_id=a.request_id, quantity=a.quantity,
        refund_id=a.refund_id or _new_id())))  # fmt: skip


def _quota(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import quota_pb2 as pb  # noqa: PLC0415

    p = parser(sub, "check", "may this action run now? If so, charge it (exit 2 when denied)")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("action", help=_ACTION)
    p.add_argument("-q", "--quantity", type=whole, default=1, help=_QUANTITY)
    p.add_argument("-a", "--attr", type=pair, action="append", default=[], help=_ATTR)
    p.add_argument("--request-id", default="", help="idempotency key (default: a new one)")
    p.add_argument("--dry-run", action="store_true", help="answer as if charging, change nothing")
    p.set_defaults(func=client("quota", "CheckAndConsume", lambda a: pb.CheckAndConsumeRequest(
        account_id=a.account_id, action=a.action, quantity=a.quantity, attributes=dict(a.attr),
        request_id=a.request_id or _new_id(), dry_run=a.dry_run)))  # fmt: skip
    p = parser(sub, "reserve", "hold an estimate until settle or release (exit 2 when denied)")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("action", help=_ACTION)
    p.add_argument("-q", "--quantity", type=whole, default=1, help="units to hold (default 1)")
    p.add_argument("-a", "--attr", type=pair, action="append", default=[], help=_ATTR)
    p.add_argument("--reservation-id", default="", help="idempotency key (default: a new one)")
    p.add_argument(
        "--ttl", type=whole, default=0, help="seconds the hold lasts (default: server's)"
    )
    p.set_defaults(func=client("quota", "Reserve", lambda a: pb.ReserveRequest(
        account_id=a.account_id, action=a.action, quantity=a.quantity, attributes=dict(a.attr),
        reservation_id=a.reservation_id or _new_id(), ttl_seconds=a.ttl)))  # fmt: skip
    p = parser(sub, "settle", "charge the actual quantity against a hold; the rest returns")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("reservation_id", help="the id reserve printed")
    p.add_argument("-q", "--quantity", type=whole, required=True, help="the units actually used")
    p.set_defaults(func=client("quota", "Settle", lambda a: pb.SettleRequest(
        account_id=a.account_id, reservation_id=a.reservation_id,
        quantity=a.quantity)))  # fmt: skip
    p = parser(sub, "release", "drop a hold: everything it held returns to its pools")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("reservation_id", help="the id reserve printed")
    p.set_defaults(func=client("quota", "Release", lambda a: pb.ReleaseRequest(
        account_id=a.account_id, reservation_id=a.reservation_id)))  # fmt: skip


def _webhooks(sub: Sub[argparse.ArgumentParser]) -> None:
    from creditgate.v1 import admin_pb2 as pb  # noqa: PLC0415

    hook = sub.add_parser("webhook", help="webhook endpoints of notifications (admins)")
    ops = hook.add_subparsers(dest="op", required=True, metavar="OPERATION")
    p = parser(ops, "create", "add an endpoint; prints its whsec_ secret (keep it)")
    p.add_argument("url", help="http:// or https:// URL that receives the POSTs")
    p.add_argument("--account", default="", help="only this account's (default: every account)")
    p.add_argument("--kind", action="append", default=[], help="only this kind (repeatable)")
    p.add_argument("--secret", default="", help="a whsec_ secret (default: a new one)")
    p.set_defaults(func=client("admin", "CreateWebhookEndpoint", lambda a:
        pb.CreateWebhookEndpointRequest(account_id=a.account, url=a.url, kinds=a.kind,
        secret=a.secret)))  # fmt: skip
    p = parser(ops, "list", "the endpoints, global and per account (secrets not shown)")
    p.add_argument("--account", default="", help="only this account's")
    p.set_defaults(func=client("admin", "ListWebhookEndpoints", lambda a:
        pb.ListWebhookEndpointsRequest(account_id=a.account)))  # fmt: skip
    for name in ("enable", "disable"):
        p = parser(ops, name, f"{name} an endpoint")
        p.add_argument("endpoint_id", help="as webhook list shows it")
        p.set_defaults(func=client("admin", "SetWebhookEndpointEnabled", lambda a:
            pb.SetWebhookEndpointEnabledRequest(endpoint_id=a.endpoint_id,
            enabled=a.op == "enable")))  # fmt: skip
    p = parser(ops, "delete", "remove an endpoint; what was pending for it is dropped")
    p.add_argument("endpoint_id", help="as webhook list shows it")
    p.set_defaults(func=client("admin", "DeleteWebhookEndpoint", lambda a:
        pb.DeleteWebhookEndpointRequest(endpoint_id=a.endpoint_id)))  # fmt: skip
    p = parser(ops, "rotate", "a new signing secret; the previous keeps signing too")
    p.add_argument("endpoint_id", help="as webhook list shows it")
    p.add_argument("--secret", default="", help="the new whsec_ secret (default: a new one)")
    p.add_argument("--drop-previous", action="store_true", help="stop signing with the old ones")
    p.set_defaults(func=client("admin", "RotateWebhookSecret", lambda a:
        pb.RotateWebhookSecretRequest(endpoint_id=a.endpoint_id, secret=a.secret,
        drop_previous=a.drop_previous)))  # fmt: skip
    p = parser(sub, "notifications", "what was sent to an account's webhooks, newest first")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--limit", type=whole, default=20, help="1-100 per page (default 20)")
    p.add_argument("--cursor", default="", help="the next cursor the previous page printed")
    p.set_defaults(func=client("admin", "ListNotifications", lambda a:
        pb.ListNotificationsRequest(account_id=a.account_id, limit=a.limit,
        cursor=a.cursor)))  # fmt: skip


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    """Add the account, money, quota and webhook commands to ``creditgate``'s subcommands."""
    _accounts(sub)
    _money(sub)
    _quota(sub)
    _webhooks(sub)
