"""Drill: a Redis Cluster master is killed under load; its replica is promoted (issue 21, 2).

Three masters with a replica each (cluster_kit.LocalCluster, cluster-node-timeout 1 s). Eight
clients charge 1 unit at a time with unique request ids, retrying a failed call with the same
id, while the ledger worker runs. The master of a busy account is SIGKILLed; its replica takes
over after the node timeout; the load goes on to the new master.

Redis replication is asynchronous: a charge the old master acknowledged but had not yet sent to
its replica is gone from the promoted one. If the worker had read it from the old master's
stream, the ledger has it and reconcile puts it back into Redis; if not, it is lost everywhere.
The drill measures both (run with -s to see the figures) and requires that after
``Reconciler.repair`` Redis and the ledger agree, and that no acknowledged charge the ledger
holds is missing from Redis. docs/SCALING.md explains how WAIT and min-replicas-to-write bound
the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import pytest

from cluster_kit import LocalCluster
from creditgate.domain.errors import OutcomeUnknownError, UnavailableError
from creditgate.driver.cluster import ClusterFastRedis, cluster_client
from creditgate.engine import Engine, KeySpace
from creditgate.ledger import open_ledger
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.ledger.hydrate import install_hydration
from creditgate.ledger.reconcile import Reconciler
from creditgate.worker import Worker
from drills.conftest import WALLET

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.ledger import LedgerStore

MICRO = 1_000_000
ACCOUNTS = [f"f{i}" for i in range(12)]
CLIENTS = 8


async def _load(engine: Engine, n: int, acked: dict[str, int], stop: asyncio.Event) -> int:
    """Charge until ``stop``; a failed call is retried with its id. Returns calls that failed."""
    failures, i = 0, 0
    while not stop.is_set():
        i += 1
        account = ACCOUNTS[(n + i) % len(ACCOUNTS)]
        for _ in range(200):  # a failover takes ~2 s; a call is retried every 50 ms
            try:
                decision = await engine.consume(account, "use", 1, {}, f"L{n}-{i}")
            except (UnavailableError, OutcomeUnknownError):
                failures += 1
                await asyncio.sleep(0.05)
                continue
            if decision.allowed:
                acked[account] = acked.get(account, 0) + 1
            break
        else:
            pytest.fail(f"charge L{n}-{i} failed for 10 s after the failover")
    return failures


async def _spent(engine: Engine, account: str) -> int:
    wallet = next(p for p in (await engine.balance(account)).pools if p.pool_id == "wallet")
    return 10**6 - wallet.balance // MICRO


async def _losses(
    engine: Engine, store: LedgerStore, acked: dict[str, int]
) -> tuple[int, int, int, dict[str, int]]:
    """Acknowledged charges; those missing from Redis; from Redis and the ledger; ledger's."""
    in_redis = {a: await _spent(engine, a) for a in ACCOUNTS}
    in_ledger = {
        a: 10**6 - (await store.movement_sums(a)).get("wallet", 0) // MICRO for a in ACCOUNTS
    }
    lost_redis = sum(max(0, acked.get(a, 0) - in_redis[a]) for a in ACCOUNTS)
    lost_both = sum(max(0, acked.get(a, 0) - max(in_redis[a], in_ledger[a])) for a in ACCOUNTS)
    return sum(acked.values()), lost_redis, lost_both, in_ledger


@pytest.mark.timeout(120)
async def test_a_killed_master_fails_over_and_reconcile_repairs_from_the_ledger(
    tmp_path: Path,
) -> None:
    with LocalCluster(3, replicas=1, node_timeout_ms=1000) as cluster:
        redis = cluster_client(cluster.url, timeout=1.0)
        fast = ClusterFastRedis(cluster.url, timeout=1.0)
        store = await open_ledger(f"sqlite:///{tmp_path}/ledger.db", migrate=True)
        keys = KeySpace()
        engine = Engine(redis, WALLET, keys=keys, test_clock=True, fast=fast)
        install_hydration(engine, store)
        worker = Worker(redis, LedgerConsumer(store), keys, batch=200, block_ms=20, per_stream=True)
        worker_task = asyncio.create_task(worker.run())
        try:
            for a in ACCOUNTS:
                await engine.create_account(a, "p", 1)
                await engine.grant(a, "wallet", 10**6 * MICRO, "g")
            acked: dict[str, int] = {}
            stop = asyncio.Event()
            clients = [asyncio.create_task(_load(engine, n, acked, stop)) for n in range(CLIENTS)]
            await asyncio.sleep(1.5)
            victim = cluster.master_of(keys.account(ACCOUNTS[0])[0])
            promoted = cluster.replica_of(victim)
            victim.process.kill()
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.wait_healthy, 30)
            with promoted.client() as c:
                assert c.execute_command("ROLE")[0] == "master", "the replica was not promoted"
            failover_s = time.monotonic() - killed_at
            await asyncio.sleep(1.5)  # the load runs on the new master
            stop.set()
            failed_calls = sum(await asyncio.gather(*clients))
            worker.stop()
            await asyncio.wait_for(worker_task, 30)
            await Worker(redis, LedgerConsumer(store), keys, per_stream=True).drain()

            total, lost_redis, lost_both, in_ledger = await _losses(engine, store, acked)
            rec = Reconciler(redis, store, keys)
            differing = await rec.check(progress=False)
            started = time.monotonic()
            await rec.repair(list(differing), progress=False)
            repair_s = time.monotonic() - started
            assert await rec.check(progress=False) == {}, "Redis and the ledger still differ"
            after = {a: await _spent(engine, a) for a in ACCOUNTS}
            assert after == in_ledger, "after repair Redis says what the ledger says"
            print(  # noqa: T201 - the drill's figures
                f"\ncluster failover drill: {total} charges acknowledged, {failed_calls} calls "
                f"failed and were retried, failover took {failover_s:.1f} s; "
                f"{lost_redis} acknowledged charges missing from the promoted replica, "
                f"{lost_both} missing from Redis and the ledger; {len(differing)} accounts "
                f"repaired from the ledger in {repair_s * 1000:.0f} ms"
            )
        finally:
            worker.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker_task, 10)
            await fast.aclose()
            await redis.aclose()
            await store.close()
