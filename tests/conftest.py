"""Shared fixtures: a real Redis for the whole session, a clean database for each test.

Set ``CREDITGATE_TEST_CLUSTER=1`` to run the same tests on a real 3-master Redis Cluster
(``cluster_kit.LocalCluster``, started once per session): ``redis`` is then redis-py's cluster
client and the sidecar's hot path is ``ClusterFastRedis``. ``make test`` runs the scenario,
concurrency and property suites both ways.

Set ``CREDITGATE_TEST_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/15``) to test against a
server you run yourself. That database is FLUSHDB-ed at session start and before every
test that uses the ``redis`` fixture, so point it at a database you can lose. Without the
variable a private ``EmbeddedRedis`` is started once per session and stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio
from redis import Redis

from cluster_kit import ON_CLUSTER, LocalCluster, async_client, fast_client
from creditgate.domain.catalog import Catalog, load_catalog
from creditgate.engine import Engine
from creditgate.v1 import admin_pb2_grpc, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis, find_redis_server
from creditgate.wiring.server import build_server
from served_kit import restarted, served  # noqa: F401 - the `make run` sidecar fixtures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from redis.asyncio import Redis as AsyncRedis

REDIS_URL_ENV = "CREDITGATE_TEST_REDIS_URL"


def pytest_report_header() -> str:
    """Which server the suite's private Redis runs (CREDITGATE_EMBEDDED_SERVER), in the log."""
    if os.environ.get(REDIS_URL_ENV):
        return f"redis: {os.environ[REDIS_URL_ENV]} ({REDIS_URL_ENV})"
    binary = find_redis_server()
    version = subprocess.run(  # noqa: S603 - our own binary, no shell
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"embedded server: {binary} ({version})"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Return the URL of a Redis server that lives for the whole test session.

    Guarantees: the server answers PING and its database is empty at session start.
    """
    external = os.environ.get(REDIS_URL_ENV)
    if ON_CLUSTER:
        with LocalCluster(3) as cluster:
            yield cluster.url
        return
    if external:
        with Redis.from_url(external) as client:
            client.flushdb()
        yield external
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(name="redis")
async def redis_client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    """Yield an asyncio client on an empty database; it is closed after the test.

    Guarantees: FLUSHDB ran just before the test, so no key from an earlier test is
    visible. Responses are bytes (``decode_responses`` is off).
    """
    client = async_client(redis_url)
    try:
        await client.flushdb()  # on a cluster: every master
        yield client
    finally:
        await client.aclose()


@dataclass
class Sidecar:
    """A real creditgate gRPC server on a free port, its channel and stubs."""

    engine: Engine
    channel: grpc.aio.Channel
    quota: quota_pb2_grpc.QuotaServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    target: str


@pytest.fixture(scope="session")
def demo_catalog() -> Catalog:
    """The catalog of examples/demo.yaml: every seed product as plans."""
    return load_catalog(Path(__file__).parent.parent / "examples" / "demo.yaml")


@pytest_asyncio.fixture
async def sidecar(
    redis_url: str,
    redis: AsyncRedis,
    demo_catalog: Catalog,
) -> AsyncIterator[Sidecar]:
    """Serve a test-clock sidecar on the demo catalog.

    Each account's time is frozen until AdvanceTestClock. A real grpc.aio server on port 0
    and a real channel, with the same pipelined CheckAndConsume path as production.
    """
    fast = fast_client(redis_url)
    engine = Engine(redis, demo_catalog, test_clock=True, fast=fast)
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Sidecar(
            engine,
            channel,
            quota_pb2_grpc.QuotaServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            target,
        )
    finally:
        await channel.close()
        await server.stop(None)
        await fast.aclose()
