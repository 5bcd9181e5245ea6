"""The ledger store on both backends: idempotency, ordering, and the reads the admin API needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conftest import Ledger, Workload, assert_consistent, make_worker
from creditgate.ledger import parse_entry

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace
    from creditgate.events.schema import Event


async def stream_events(redis: AsyncRedis, keys: KeySpace) -> list[Event]:
    out = []
    for s in keys.streams():
        out += [parse_entry(s, i, f) for i, f in await redis.xrange(s)]
    return out


async def test_same_event_twice_makes_one_row(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """A redelivered event (same id, again and inside one batch) adds no row and no state."""
    await workload.create(6)
    await workload.run(60)
    events = await stream_events(redis, keys)
    first = await ledger.store.apply(events)
    assert first.applied == len(events)
    again = await ledger.store.apply(events + events[:5])
    assert (again.applied, again.duplicates) == (0, len(events) + 5)
    counts = await ledger.store.event_counts()
    assert sum(counts.values()) == len(events)
    await assert_consistent(engine, ledger, workload)


async def test_late_batch_never_overwrites_newer_state(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """Two workers committing out of order (newer batch first) still leave the newest mirror."""
    await workload.create(4)
    await workload.run(80)
    events = await stream_events(redis, keys)
    half = len(events) // 2
    await ledger.store.apply(events[half:])
    await ledger.store.apply(events[:half])
    await assert_consistent(engine, ledger, workload)


async def test_history_totals_and_usage(
    ledger: Ledger,
    engine: Engine,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """Transactions page newest first with running balances; totals and usage add up."""
    await engine.create_account("u", "mixed")
    await engine.grant("u", "bonus", 50_000_000, "g1")
    for i in range(7):
        await engine.consume("u", "use", 10, {}, f"c{i}")
    await engine.refund("u", "c6", "f6")
    await make_worker(redis, ledger.store, keys).drain()
    seen, cursor = [], None
    while True:
        page = await ledger.store.transactions("u", limit=3, cursor=cursor)
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [t.kind for t in seen[:2]] == ["refund", "charge"]
    assert len({t.cursor for t in seen}) == len(seen) == 10  # reset, grant, 7 charges, refund
    base = [t for t in seen if t.pool == "base"]
    assert base[0].balance_after == 200_000_000 - 60_000_000
    totals = {t.pool: t for t in await ledger.store.totals("u")}
    assert totals["base"].added == 200_000_000
    assert totals["base"].spent == 60_000_000
    assert totals["bonus"].added == 50_000_000
    usage = await ledger.store.usage("u", "month")
    assert [(u.action, u.pool, u.amount) for u in usage] == [("use", "base", 60_000_000)]
