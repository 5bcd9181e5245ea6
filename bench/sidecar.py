"""The sidecar as the bench scripts stand it up: its settings, accounts, paths and processes.

Shared by `make bench` (bench/run.py) and the scripts that measure one part of it
(decompose.py, embedded_gap.py, script_cost.py, worker_lag.py): the CheckAndConsume paths and
the in-flight levels h2load drives them at, `creditgate serve`'s environment on the bench's
Redis and catalog, the accounts it charges, a warm-up that touches each of them once, and the
server processes of a multi-process sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import tools
from baselines import ATTRS, CATALOG
from redis.asyncio import Redis

from creditgate.domain.catalog import load_catalog
from creditgate.domain.money import MICRO
from creditgate.engine import Engine, KeySpace
from creditgate.v1 import quota_pb2, quota_pb2_grpc

PATH = "/creditgate.v1.QuotaService/CheckAndConsume"
BATCH_PATH = "/creditgate.v1.QuotaService/CheckAndConsumeBatch"
LEVELS = {1: (1, 1), 16: (4, 4), 64: (4, 16), 256: (8, 32)}  # in flight: (connections, streams)


def sidecar_env(redis_url: str, listen: str) -> dict[str, str]:
    """`creditgate serve` on the bench's Redis and catalog: one shard, ledger and metrics off."""
    return {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_SHARDS": "1",
        "CREDITGATE_LEDGER_URL": "",
        "CREDITGATE_METRICS_PORT": "0",
        "CREDITGATE_CONFIG": str(CATALOG),
        "CREDITGATE_LISTEN": listen,
        "CREDITGATE_LOG_LEVEL": "WARNING",
    }


async def provision(url: str, accounts: int) -> dict[str, float]:
    """Create the hot account and ``accounts`` others (agent_team, a large bonus each)."""
    redis = Redis.from_url(url)
    engine = Engine(redis, load_catalog(CATALOG), keys=KeySpace("cg", 1))
    before = (await redis.info("memory"))["used_memory"]
    limit = asyncio.Semaphore(50)

    async def one(account: str) -> None:
        async with limit:
            await engine.create_account(account, "agent_team")
            await engine.grant(account, "bonus", 10**9 * MICRO, "bench-grant")

    await one("bench-hot")
    middle = (await redis.info("memory"))["used_memory"]
    await asyncio.gather(*(one(f"acct-{i:012d}") for i in range(accounts)))
    after = (await redis.info("memory"))["used_memory"]
    await redis.aclose()
    return {"bytes_per_account": (after - middle) / max(accounts, 1), "base": middle - before}


def warm_up(target: str, accounts: int) -> None:
    """Touch every account once (in batches), as a long-running sidecar has.

    The first request of an account on a sidecar learns its plan with one extra round trip.
    """
    with grpc.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        for start in range(0, accounts, 1000):
            stub.CheckAndConsumeBatch(
                quota_pb2.CheckAndConsumeBatchRequest(
                    requests=[
                        quota_pb2.CheckAndConsumeRequest(
                            account_id=f"acct-{i:012d}",
                            action="agent.message",
                            quantity=1,
                            attributes=ATTRS,
                        )
                        for i in range(start, min(start + 1000, accounts))
                    ]
                ),
                timeout=60,
            )


def is_worker(pid: int) -> bool:
    """Whether ``pid`` is a ledger worker (``python -m creditgate worker``)."""
    with contextlib.suppress(OSError):
        return b"\0worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def processes_of(pid: int, expected: int) -> list[int]:
    """The server pids of a sidecar run with CREDITGATE_PROCESSES=``expected``, once all are up.

    Its ledger worker (a child too, when the worker is on) is left out.
    """
    for _ in range(100):
        family = [p for p in tools.family(pid) if not is_worker(p)]
        if len(family) == expected:
            time.sleep(1)  # the others serve a moment after they start
            return family
        time.sleep(0.1)
    msg = f"{len(tools.family(pid))} sidecar processes, not {expected}"
    raise RuntimeError(msg)
