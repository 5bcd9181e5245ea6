"""The worker: acknowledges after commit, claims from dead consumers, trims only what is safe."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from conftest import Ledger, Workload, assert_consistent, make_worker
from creditgate.ledger.consumer import GROUP

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace


async def test_trim_keeps_unacked_entries_and_claims_them_later(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """Entries a dead consumer holds survive trimming; after the idle time they are claimed."""
    await workload.create(8)
    await workload.run(100)
    worker = make_worker(redis, ledger.store, keys)
    await worker.setup()
    stream = keys.streams()[0]
    held = await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=5)
    held_ids = [e[0] for e in held[0][1]]
    assert held_ids
    await worker.drain()
    for eid in held_ids:  # still in the stream, still pending for the dead consumer
        assert await redis.xrange(stream, min=eid, max=eid)
    assert (await redis.xpending(stream, GROUP))["pending"] == len(held_ids)
    await asyncio.sleep(1.1)  # claim_idle_ms = 1000
    await worker.drain()
    assert (await redis.xpending(stream, GROUP))["pending"] == 0
    for s in keys.streams():
        assert await redis.xlen(s) == 0, "acknowledged entries are trimmed"
    await assert_consistent(engine, ledger, workload)


async def test_consumer_group_recreated_after_redis_lost_it(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """NOGROUP (Redis restarted without its streams) makes the worker recreate its group."""
    worker = make_worker(redis, ledger.store, keys)
    await worker.setup()
    for s in keys.streams():
        await redis.delete(s)
    await workload.create(5)
    await workload.run(50)
    assert await worker.run_once() == 0  # NOGROUP: group recreated
    await worker.drain()
    await assert_consistent(engine, ledger, workload)


async def test_lag_gauge_reports_oldest_unapplied_event(
    ledger: Ledger,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """creditgate_ledger_lag_seconds is positive while events wait and 0 once applied."""
    worker = make_worker(redis, ledger.store, keys)
    await worker.setup()
    await workload.create(8)
    await asyncio.sleep(0.05)
    await worker.housekeeping()

    def lag() -> float:
        return max(
            REGISTRY.get_sample_value("creditgate_ledger_lag_seconds", {"stream": s}) or 0.0
            for s in keys.streams()
        )

    assert lag() >= 0.05
    await worker.drain()
    assert lag() == 0.0
