"""Several workers over the shards (``worker.lanes.Lanes``): still every event exactly once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from conftest import Ledger, Workload, assert_consistent
from creditgate.ledger import LedgerError
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.worker.lanes import Lanes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.engine import Engine
    from creditgate.events.schema import Event
    from creditgate.worker.consumer import Applied


def _lanes(engine: Engine, consumer: LedgerConsumer, lanes: int) -> Lanes:
    return Lanes(
        engine.redis, consumer, engine.keys, lanes, batch=50, block_ms=0, claim_idle_ms=1000
    )


async def test_lanes_split_the_streams_and_apply_everything_once(
    ledger: Ledger, engine: Engine, workload: Workload
) -> None:
    await workload.create(12)
    await workload.run(600)
    lanes = _lanes(engine, LedgerConsumer(ledger.store), 3)
    owned = [s for w in lanes.workers for s in w.streams]
    assert sorted(owned) == sorted(engine.keys.streams())  # each stream in exactly one lane
    assert len({w.name for w in lanes.workers}) == 3
    entries = sum([await engine.redis.xlen(s) for s in engine.keys.streams()])
    assert await lanes.drain() == entries
    await assert_consistent(engine, ledger, workload)
    assert await _lanes(engine, LedgerConsumer(ledger.store), 3).drain() == 0


class _CommitsThenFails(LedgerConsumer):
    """The ledger commits a batch, then the worker dies before XACK (a crash after COPY)."""

    failed = False

    async def apply(self, events: Sequence[Event]) -> Applied:
        result = await super().apply(events)
        if not self.failed and result.applied:
            self.failed = True
            msg = "crash between the ledger commit and the acknowledgement"
            raise LedgerError(msg)
        return result


async def test_crash_between_commit_and_ack_is_applied_once(
    ledger: Ledger, engine: Engine, workload: Workload
) -> None:
    await workload.create(8)
    await workload.run(400)
    crashing = _lanes(engine, _CommitsThenFails(ledger.store), 2)
    with pytest.raises(LedgerError):
        await crashing.drain()
    # Another process (new consumer names) claims what the crashed lanes left pending.
    survivors = _lanes(engine, LedgerConsumer(ledger.store), 4)
    for w in survivors.workers:
        w.name = f"after-{w.name}"
    for _ in range(30):  # claim_idle_ms is 1 s: the crashed lanes' entries are claimed soon
        await survivors.drain()
        pending = [
            await engine.redis.xpending(s, "creditgate-ledger") for s in engine.keys.streams()
        ]
        if all(p["pending"] == 0 for p in pending):
            break
        await asyncio.sleep(0.5)
    await assert_consistent(engine, ledger, workload)


async def test_linger_gathers_short_batches_and_still_applies_everything(
    ledger: Ledger, engine: Engine, workload: Workload
) -> None:
    """With linger, a running worker reads fewer, larger batches; nothing is lost or doubled."""
    await workload.create(6)
    lanes = Lanes(
        engine.redis,
        LedgerConsumer(ledger.store),
        engine.keys,
        1,
        batch=10_000,
        block_ms=50,
        linger_ms=200,
    )
    await lanes.setup()
    reads: list[int] = []
    worker = lanes.workers[0]
    run_once = worker.run_once

    async def counting(*, block: bool = True) -> int:
        applied = await run_once(block=block)
        if worker.last_read > 0:
            reads.append(worker.last_read)
        return applied

    worker.run_once = counting  # type: ignore[method-assign]
    task = asyncio.create_task(lanes.run())
    for _ in range(10):  # events arrive in ten bursts 50 ms apart
        await workload.run(20)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    lanes.stop()
    await task
    assert sum(reads) >= 200
    assert len(reads) < 10
    await assert_consistent(engine, ledger, workload)
