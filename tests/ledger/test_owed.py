"""The ledger's view of money paid and not credited (ledger/owed.py), on SQLite and PostgreSQL.

payments/recovery.py acts on these answers (tests/payments/test_recovery.py runs it end to end
after a Redis loss); here the queries themselves, on both databases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conftest import Ledger, make_worker
from creditgate.domain.purchase import PurchaseRecord
from creditgate.domain.topup import AutoTopUp
from creditgate.ledger.owed import credits_owed, topup_event, topups_in_flight
from creditgate.ledger.sql import SqlLedger

if TYPE_CHECKING:
    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace

USD = 1_000_000
FAR = 2**62


async def test_a_succeeded_purchase_is_owed_until_its_grant_is_in_the_ledger(
    ledger: Ledger, engine: Engine, keys: KeySpace
) -> None:
    store = ledger.store
    assert isinstance(store, SqlLedger)
    await engine.create_account("m", "mixed")
    for pid, status in (("p1", "succeeded"), ("p2", "failed"), ("p3", "pending")):
        row = PurchaseRecord(pid, "m", 5 * USD, "usd", "pending", "test", created_ms=1000)
        await store.claim_purchase(row)
        if status != "pending":
            await store.finish_purchase(PurchaseRecord(pid, "m", 5 * USD, "usd", status, "test"))
    owed = await credits_owed(store, 0, FAR)
    assert [(r.purchase_id, r.amount) for r in owed] == [("p1", 5 * USD)]
    assert await credits_owed(store, 1001, FAR) == []  # outside the window
    await engine.grant("m", "wallet", 5 * USD, "purchase:p1")
    await make_worker(engine.redis, store, keys).drain()
    assert await credits_owed(store, 0, FAR) == []


async def test_a_top_up_in_flight_without_a_purchase_row(
    ledger: Ledger, engine: Engine, keys: KeySpace
) -> None:
    store = ledger.store
    assert isinstance(store, SqlLedger)
    await engine.create_account("m", "mixed")
    await engine.grant("m", "wallet", 3 * USD, "g")
    await engine.set_auto_topup("m", "wallet", AutoTopUp(5 * USD, 10 * USD))  # starts one now
    tid = (await engine.auto_topup("m", "wallet")).state.topup_id
    await make_worker(engine.redis, store, keys).drain()
    [event] = await topups_in_flight(store, FAR)
    assert (event.request_id, event.extra["pool"], event.extra["amount"]) == (
        tid,
        "wallet",
        str(10 * USD),
    )
    assert await topups_in_flight(store, event.time_ms - 1) == []  # started after
    assert await topup_event(store, "m", tid) == event
    await store.claim_purchase(PurchaseRecord(f"auto:{tid}", "m", 10 * USD, "usd", "pending"))
    assert await topups_in_flight(store, FAR) == []  # the payer has it
