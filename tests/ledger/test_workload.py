"""A randomized, concurrent workload: Redis and the ledger agree to the micro-unit."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cluster_kit import async_client
from conftest import Ledger, Workload, assert_consistent, make_worker

if TYPE_CHECKING:
    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace


async def test_ten_thousand_random_operations_match_the_ledger(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis_url: str,
    keys: KeySpace,
) -> None:
    """10,000 mixed operations on 120 accounts leave Redis and the ledger equal.

    Two workers apply while traffic runs, then drain: reconcile is clean, every pool balance and
    movement sum equals Redis, and the ledger has exactly one event per successful operation.
    """
    await workload.create(120)
    redis = async_client(redis_url)  # the workers' own connections
    workers = [make_worker(redis, ledger.store, keys, name=f"w{i}", batch=300) for i in (1, 2)]
    for w in workers:
        await w.setup()

    async def apply_while_running(w_index: int) -> None:
        while not done.is_set():
            if await workers[w_index].run_once(block=False) == 0:
                await asyncio.sleep(0.01)

    done = asyncio.Event()
    runners = [asyncio.create_task(apply_while_running(i)) for i in (0, 1)]
    await workload.run(10_000, concurrency=100)
    done.set()
    await asyncio.gather(*runners)
    await asyncio.gather(*(w.drain() for w in workers))
    assert sum(workload.expected.values()) >= 10_000 * 0.6
    await redis.aclose()
    await assert_consistent(engine, ledger, workload)
