"""Faults: a killed worker, a ledger outage, and a Redis that comes back empty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis as AsyncRedis

from cluster_kit import ON_CLUSTER
from conftest import SHARDS, Ledger, Workload, assert_consistent, catalog, make_worker
from creditgate.engine import Engine
from creditgate.ledger import LedgerError
from creditgate.ledger.hydrate import Hydrator, install_hydration
from creditgate.wiring.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.engine.keys import KeySpace


def _spawn_worker(
    redis_url: str,
    ledger_url: str,
    name: str,
    *extra: str,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_LEDGER_URL": ledger_url,
        "CREDITGATE_SHARDS": str(SHARDS),
        "CREDITGATE_REDIS_CLUSTER": "true" if ON_CLUSTER else "false",
        "CREDITGATE_WORKER_BATCH": "20",
        "CREDITGATE_WORKER_BLOCK_MS": "100",
        "CREDITGATE_WORKER_CLAIM_IDLE_MS": "1000",
        "CREDITGATE_WORKER_NAME": name,
        "CREDITGATE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "creditgate", "worker", *extra], env=env)  # noqa: S603


async def test_worker_killed_mid_batch_then_restarted(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis_url: str,
) -> None:
    """SIGKILL while applying, a new worker claims what the dead one held: none lost or doubled."""
    await workload.create(20)
    await workload.run(1500, concurrency=150)
    entries = sum([await engine.redis.xlen(s) for s in engine.keys.streams()])
    proc = _spawn_worker(redis_url, ledger.url, "victim")
    try:
        for _ in range(400):
            await asyncio.sleep(0.02)
            if sum((await ledger.store.event_counts()).values()) > 100:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    total = sum((await ledger.store.event_counts()).values())
    assert 0 < total < entries, "the victim died part way through"
    await asyncio.sleep(1.1)  # past claim_idle_ms: the victim's pending entries are claimable
    rescuer = _spawn_worker(redis_url, ledger.url, "rescuer", "--burst")
    assert await asyncio.to_thread(rescuer.wait, 60) == 0
    await assert_consistent(engine, ledger, workload)


async def test_ledger_outage_while_engine_answers(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
) -> None:
    """The ledger goes away: requests are still answered, the worker waits and then catches up."""
    worker = make_worker(redis, ledger.store, keys)
    await workload.create(10)
    await workload.run(100)
    await worker.drain()
    lock = await _outage_begin(ledger)
    try:
        await workload.run(300)  # the sidecar's path needs Redis only
        with pytest.raises(LedgerError):
            await worker.run_once(block=False)
    finally:
        await _outage_end(ledger, lock)
    for _ in range(50):  # the private server may take a moment to accept connections
        try:
            await worker.drain()
            break
        except LedgerError:
            await asyncio.sleep(0.2)
    await assert_consistent(engine, ledger, workload)


async def _outage_begin(ledger: Ledger) -> sqlite3.Connection | None:
    if ledger.pg is not None:
        await ledger.pg.outage_begin()
        return None
    # SQLite has no server to stop: another process holding the write lock is its outage.
    path = ledger.url.removeprefix("sqlite:///")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    await ledger.store._db.execute("PRAGMA busy_timeout=100")  # type: ignore[attr-defined]
    return lock


async def _outage_end(ledger: Ledger, lock: sqlite3.Connection | None) -> None:
    if lock is not None:
        lock.execute("ROLLBACK")
        lock.close()
    if ledger.pg is not None:
        await ledger.pg.outage_end()


async def test_redis_restarted_empty_rehydrates_from_ledger(
    ledger: Ledger,
    keys: KeySpace,
    tmp_path: Path,
) -> None:
    """After Redis comes back empty, accounts load from the ledger once and match it exactly."""
    first = EmbeddedRedis(tmp_path / "r1").start()
    try:
        redis = AsyncRedis.from_url(first.url)
        engine = Engine(redis, catalog(), keys=keys, test_clock=True)
        work = Workload(engine, random.Random(7))  # noqa: S311 - test data
        await work.create(12)
        await work.run(400)
        await make_worker(redis, ledger.store, keys).drain()
        await redis.aclose()
    finally:
        first.stop()
    with EmbeddedRedis(tmp_path / "r2") as second:
        redis = AsyncRedis.from_url(second.url)
        engine = Engine(redis, catalog(), keys=keys, test_clock=True)
        install_hydration(engine, ledger.store)
        other = Hydrator(redis, ledger.store, keys)  # a second sidecar on the same Redis

        def loaded() -> float:
            return (
                REGISTRY.get_sample_value("creditgate_hydrations_total", {"result": "loaded"})
                or 0.0
            )

        before = loaded()
        calls = [engine.balance(a) for a in work.accounts for _ in range(5)]
        calls += [other.load(a) for a in work.accounts]
        await asyncio.gather(*calls)
        assert loaded() - before == len(work.accounts), "each account is written exactly once"
        work.engine = engine
        await assert_consistent(engine, ledger, None)
        await work.run(400)  # refunds of pre-restart charges find their restored records
        await make_worker(redis, ledger.store, keys).drain()
        await assert_consistent(engine, ledger, work)
        await redis.aclose()


async def test_worker_survives_an_unexpected_error(
    ledger: Ledger,
    workload: Workload,
    redis: AsyncRedis,
    keys: KeySpace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error nobody foresaw (a driver's protocol error, a bug) is logged and retried.

    The worker a sidecar runs in-process must not die of it: the ledger would fall behind while
    the sidecar kept serving. One apply fails with an injected error; the running worker goes on
    and every event still lands once.
    """
    real_apply = ledger.store.apply
    failed = asyncio.Event()

    async def apply_once_broken(events: list[Any]) -> Any:  # noqa: ANN401 - the store's result
        if not failed.is_set():
            failed.set()
            msg = "cannot switch to state 15; another operation (2) is in progress"
            raise RuntimeError(msg)
        return await real_apply(events)

    monkeypatch.setattr(ledger.store, "apply", apply_once_broken)
    worker = make_worker(redis, ledger.store, keys, block_ms=50)
    task = asyncio.create_task(worker.run())
    try:
        await workload.create(5)
        await workload.run(200)
        await asyncio.wait_for(failed.wait(), 10)
        for _ in range(100):
            if not task.done() and sum((await ledger.store.event_counts()).values()) >= sum(
                workload.expected.values()
            ):
                break
            await asyncio.sleep(0.1)
        assert not task.done(), "the worker died of the error"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    await assert_consistent(workload.engine, ledger, workload)
