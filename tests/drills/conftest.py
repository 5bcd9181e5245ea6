"""The drilled deployment: a private Redis with AOF, a sidecar process, and a ledger."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2_grpc
from harness import Drill, HealthWatch, Sidecar, free_port, sidecar_env

from creditgate.embedded import EmbeddedRedis
from creditgate.v1 import admin_pb2_grpc, quota_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


async def open_drill(tmp: Path, ledger_url: str) -> Drill:
    redis = EmbeddedRedis(tmp / "redis", appendonly=True).start()
    port = free_port()
    sidecar = Sidecar(sidecar_env(tmp, redis.url, ledger_url, port), port, tmp / "sidecar.log")
    sidecar.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    drill = Drill(
        tmp,
        ledger_url,
        redis,
        sidecar,
        channel,
        quota_pb2_grpc.QuotaServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
        HealthWatch(health_pb2_grpc.HealthStub(channel)),
    )
    await drill.wait_serving()
    await drill.provision()
    drill.health.start()
    return drill


async def close_drill(drill: Drill) -> None:
    await drill.health.stop()
    await drill.channel.close()
    drill.sidecar.stop()
    with contextlib.suppress(Exception):
        drill.redis.stop()


@pytest_asyncio.fixture
async def drill(tmp_path: Path) -> AsyncIterator[Drill]:
    """A drilled deployment on the SQLite ledger."""
    d = await open_drill(tmp_path, f"sqlite:///{tmp_path}/ledger.db")
    try:
        yield d
    finally:
        await close_drill(d)


@pytest.fixture
def pg_url(postgres: object) -> str:
    return str(postgres.url)  # type: ignore[attr-defined]
