"""Readiness follows Redis at the first failed call; liveness follows the process (item 6).

A real grpc.aio server on its own private redis-server, which the tests SIGKILL and SIGSTOP.
The poll period is a minute, so any flip to NOT_SERVING seen here comes from the failed call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from creditgate.transport.health import LIVENESS, RedisHealth
from creditgate.v1 import admin_pb2, admin_pb2_grpc, quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.wiring.server import SERVICES, build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from creditgate.domain.catalog import Catalog

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIMEOUT_S = 0.5  # the Redis timeout of this server
FAILED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Rig:
    def __init__(
        self, redis: EmbeddedRedis, readiness: RedisHealth, channel: grpc.aio.Channel
    ) -> None:
        self.redis = redis
        self.readiness = readiness
        self.health = health_pb2_grpc.HealthStub(channel)
        self.quota = quota_pb2_grpc.QuotaServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    async def status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int((await self.health.Check(request, timeout=2)).status)

    async def charge(self, request_id: str) -> quota_pb2.Decision:
        request = quota_pb2.CheckAndConsumeRequest(
            account_id="acct-h", action="zite.email.send", quantity=1, request_id=request_id
        )
        return await self.quota.CheckAndConsume(request, timeout=10)

    async def readiness_all(self) -> set[int]:
        return {await self.status(name) for name in ("", *SERVICES)}


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("creditgate_redis_up")


@pytest.fixture
async def rig(tmp_path: Path, demo_catalog: Catalog) -> AsyncIterator[Rig]:
    private = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    client = Redis.from_url(private.url, socket_timeout=TIMEOUT_S)
    fast = FastRedis(private.url, timeout=TIMEOUT_S)
    engine = Engine(client, demo_catalog, test_clock=True, fast=fast)
    server, health, port = await build_server(engine, "127.0.0.1:0")
    readiness = RedisHealth(health, client, SERVICES, period=60)
    await readiness.start()
    await server.start()
    watcher = asyncio.create_task(readiness.watch())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        rig = Rig(private, readiness, channel)
        await rig.admin.CreateAccount(
            admin_pb2.CreateAccountRequest(account_id="acct-h", plan_id="zite_pro")
        )
        yield rig
    finally:
        watcher.cancel()
        await channel.close()
        await server.stop(None)
        await fast.aclose()
        await client.aclose()
        private.stop()


async def _first_failure_flips_health(rig: Rig, label: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await rig.charge(f"{label.replace(' ', '-')}-fails")
    failed_at = time.perf_counter()
    assert excinfo.value.code() in FAILED
    assert await rig.readiness_all() == {NOT_SERVING}
    flipped = time.perf_counter() - failed_at
    assert _gauge() == 0
    assert await rig.status(LIVENESS) == SERVING
    print(f"{label}: NOT_SERVING seen {flipped * 1000:.1f} ms after the failed call")  # noqa: T201


async def test_a_killed_redis_flips_readiness_at_the_first_failed_call(rig: Rig) -> None:
    """SIGKILL of Redis: the first failed call leaves health NOT_SERVING and the gauge 0.

    Liveness stays SERVING; once Redis is back, the poll makes both SERVING again.
    """
    assert (await rig.charge("before")).allowed
    assert await rig.readiness_all() == {SERVING}
    assert _gauge() == 1
    assert await rig.status(LIVENESS) == SERVING
    pid = rig.redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(rig.redis.wait)
    await _first_failure_flips_health(rig, "redis SIGKILL")
    await asyncio.to_thread(rig.redis.restart)
    assert await rig.readiness.poll()
    assert await rig.readiness_all() == {SERVING}
    assert _gauge() == 1
    again = await rig.charge("before")
    assert again.replayed


async def test_a_paused_redis_flips_readiness_at_the_first_failed_call(rig: Rig) -> None:
    """SIGSTOP of Redis: the first call to time out flips health; SIGCONT and a poll undo it."""
    assert (await rig.charge("before")).allowed
    pid = rig.redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await _first_failure_flips_health(rig, "redis SIGSTOP")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await rig.readiness.poll()
    assert await rig.readiness_all() == {SERVING}
    assert _gauge() == 1
    assert await rig.status(LIVENESS) == SERVING


async def test_a_refusal_that_is_not_redis_leaves_health_alone(rig: Rig) -> None:
    """NOT_FOUND (an unknown account) is an answer, not an outage: health stays SERVING."""
    request = quota_pb2.CheckAndConsumeRequest(
        account_id="nobody", action="zite.email.send", quantity=1, request_id="x"
    )
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await rig.quota.CheckAndConsume(request, timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    assert await rig.readiness_all() == {SERVING}
    assert _gauge() == 1
