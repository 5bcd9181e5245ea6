"""The credits commands of ``creditgate``: ``credits``, ``transactions`` and ``usage``.

They call CreditsService (owner, admin or super_admin tokens), which reads the ledger: what
they print trails Redis by the ``lag ms`` they print with it (docs/CREDITS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.wiring.cli.client import client, parser, whole

if TYPE_CHECKING:
    import argparse

    from creditgate.wiring.cli.client import Sub

__all__ = ["register"]

_ACCOUNT = "the account's id, e.g. acct-42"


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    """Add ``credits``, ``transactions`` and ``usage`` to ``creditgate``'s subcommands."""
    from creditgate.v1 import credits_pb2 as pb  # noqa: PLC0415

    p = parser(sub, "credits", "the Credits card: balance, lifetime totals, auto top-up, recent")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--pool", default="", help="a pool other than the plan's balance pool")
    p.set_defaults(func=client("credits", "GetCredits", lambda a: pb.GetCreditsRequest(
        account_id=a.account_id, pool_id=a.pool)))  # fmt: skip
    p = parser(sub, "transactions", "credit movements, newest first, with the running balance")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--pool", default="", help="only this pool's (default: every pool)")
    p.add_argument("--limit", type=whole, default=20, help="1-100 per page (default 20)")
    p.add_argument("--cursor", default="", help="the next cursor the previous page printed")
    p.set_defaults(func=client("credits", "ListTransactions", lambda a:
        pb.ListTransactionsRequest(account_id=a.account_id, pool_id=a.pool, limit=a.limit,
        cursor=a.cursor)))  # fmt: skip
    p = parser(sub, "usage", "usage by action and pool for a month or days, and what remains")
    p.add_argument("account_id", help=_ACCOUNT)
    p.add_argument("--month", default="", help="YYYY-MM (default: this month, UTC)")
    p.add_argument("--from", dest="from_day", default="", help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="to_day", default="", help="last day, YYYY-MM-DD, inclusive")
    p.set_defaults(func=client("credits", "GetUsage", lambda a: pb.GetUsageRequest(
        account_id=a.account_id, month=a.month, from_day=a.from_day, to_day=a.to_day)))  # fmt: skip
