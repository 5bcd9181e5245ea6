"""What the payments' recovery reads (payments/recovery.py): money taken, not yet credited.

A purchase or an auto top-up is paid at the provider, then credited by a Grant in Redis, whose
event reaches the ledger a moment later. Redis lost in between (no persistence, a failover)
loses the Grant with its event: the ledger then holds a succeeded purchase and no grant. And a
``topup`` event lost before the payer read it leaves a top-up in flight (``tu:<pool>`` =
``run:<id>``) that nothing will pay. Both are found here, from the ledger alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from creditgate.domain.purchase import grant_id
from creditgate.domain.topup import RECORD_PREFIX
from creditgate.domain.topup import grant_id as topup_grant_id
from creditgate.events.schema import Event
from creditgate.ledger.sql import PURCHASE_SELECT, purchase_row

if TYPE_CHECKING:
    from creditgate.domain.purchase import PurchaseRecord
    from creditgate.ledger.sql import SqlLedger

# A purchase's grant is purchase:<id>; an auto top-up's row auto:<id> is paid by topup:<id>.
_OWED = (
    f"{PURCHASE_SELECT} p WHERE status = 'succeeded' AND created BETWEEN ? AND ?"  # noqa: S608 - constant
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.account = p.account AND e.kind = 'grant'"
    " AND e.request_id IN (? || p.id, ? || substr(p.id, ?)))"
)


async def credits_owed(store: SqlLedger, since_ms: int, until_ms: int) -> list[PurchaseRecord]:
    """Succeeded purchases created in [since, until] whose grant is not in the ledger."""
    args = (since_ms, until_ms, grant_id(""), topup_grant_id(""), len(RECORD_PREFIX) + 1)
    return [purchase_row(r) for r in await store.fetch(_OWED, args)]


async def topup_event(store: SqlLedger, account: str, topup_id: str) -> Event | None:
    """The ledger's copy of the ``topup`` event that started ``topup_id``."""
    rows = await store.fetch(
        "SELECT event_id, ver, time_ms, extra FROM events WHERE account = ? AND kind = 'topup'"
        " AND request_id = ?",
        (account, topup_id),
    )
    if not rows:
        return None
    event_id, ver, time_ms, extra = rows[0]
    stream, _, entry = event_id.rpartition("/")
    moves = ()
    at = int(time_ms)
    return Event(
        stream, entry, int(ver), account, "topup", topup_id, at, moves, extra=json.loads(extra)
    )


async def topups_in_flight(store: SqlLedger, until_ms: int) -> list[Event]:
    """The ``topup`` events of the top-ups in flight that the payer never reached.

    In flight per the mirror (``tu:<pool>`` = ``run:<id>``), started by ``until_ms``, with no
    purchase row.
    """
    marks = await store.fetch(
        "SELECT account, value FROM account_fields WHERE substr(field, 1, 3) = 'tu:'"
        " AND value IS NOT NULL"
    )
    out = []
    for account, value in marks:
        mark = bytes(value).decode()
        if not mark.startswith("run:"):
            continue
        tid = mark[4:]
        if await store.fetch("SELECT 1 FROM purchases WHERE id = ?", (RECORD_PREFIX + tid,)):
            continue
        event = await topup_event(store, account, tid)
        if event is not None and event.time_ms <= until_ms:
            out.append(event)
    return out
