"""Recurring charges on time: the accounts whose charge is due are touched at its period's start.

The scripts charge a recurring charge (recurring.lua's ``recurring()``, docs/TERMS.md) at the
account's first call of the period, as they reset allowances. An account with no traffic would
pay its base fee only at its next call; the worker runs this ticker so that it pays at the
period's start (within one interval). Every pass (the worker runs one every
``CREDITGATE_RECURRING_TICK_S``, worker/periodic.py) asks the ledger's mirror for the
accounts whose earliest due ('rcd') has passed by the wall clock and brings each up to date
through the engine (``Engine.balance``, the GetBalance script), which charges what is due, once:
the same call made by a request, a second worker or a second pass charges nothing more. Accounts
on a test clock run on their own frozen time and are charged when that time passes a due.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from creditgate.domain.errors import NotFoundError

if TYPE_CHECKING:
    from creditgate.engine import Engine
    from creditgate.ledger.sql import SqlLedger

TOUCHED = Counter(
    "creditgate_recurring_touches", "Accounts brought up to date for a recurring charge due"
)


class RecurringTicker:
    """Touches the accounts whose recurring charges are due, ``batch`` per pass."""

    def __init__(self, engine: Engine, store: SqlLedger, *, batch: int = 500) -> None:
        self.engine = engine
        self.store = store
        self.batch = batch

    async def run_pass(self, now_ms: int | None = None) -> int:
        """One pass; returns how many accounts it brought up to date.

        Redis away ends the pass (UnavailableError: the worker's Periodic logs it and the next
        pass starts over).
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        touched = 0
        for account in await recurring_due(self.store, now, self.batch):
            try:
                await self.engine.balance(account)
            except NotFoundError:
                continue  # in the mirror, gone from Redis and the ledger's accounts
            touched += 1
            TOUCHED.inc()
        return touched


async def recurring_due(store: SqlLedger, now_ms: int, limit: int) -> list[str]:
    """Accounts whose earliest recurring charge ('rcd') is due by ``now_ms``, soonest first.

    As far as the mirror knows: an account charged since shows as due until the worker applies
    that (a call that finds nothing due changes nothing). Migration 0005's partial index finds
    the 'rcd' rows without reading every field.
    """
    rows = await store.fetch(
        "SELECT account, value FROM account_fields WHERE field = 'rcd' AND value IS NOT NULL"
    )
    due = sorted((int(bytes(v)), a) for a, v in rows if int(bytes(v)) <= now_ms)
    return [a for _, a in due[:limit]]
