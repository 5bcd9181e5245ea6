"""When creditgate cannot answer, Envoy's configured failure mode decides (deploy/envoy).

creditgate stopped, or its Redis dead (creditgate answers UNAVAILABLE): with the deployed
``failure_mode_deny: true`` Envoy answers 500 and the app never sees the request; with it off,
the request passes unbilled. The ext_authz bootstrap answers 503 (``status_on_error``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

from creditgate.wiring.embedded.redis import EmbeddedRedis
from envoy_kit import BOOTSTRAP, EXT_AUTHZ, Envoy, ask, demo_allowing, get, open_stack

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.domain.catalog import Catalog


async def test_creditgate_stopped_gives_500_then_fail_open_passes(
    redis_url: str, demo_catalog: Catalog, tmp_path: Path
) -> None:
    async with open_stack(redis_url, demo_catalog, tmp_path) as stack:
        await stack.account("env-down", 5)
        assert (await get(stack.envoy.port, ask("env-down"))).status == 200
        await stack.server.stop(None)
        seen = len(stack.upstream.seen)
        denied = await get(stack.envoy.port, ask("env-down"))
        assert denied.status == 500, denied
        assert len(stack.upstream.seen) == seen
        fail_open = Envoy(
            tmp_path, stack.upstream.port, stack.envoy.creditgate_port, "t", deny_on_failure=False
        )
        await asyncio.to_thread(fail_open.start)
        try:
            passed = await get(fail_open.port, ask("env-down"))
        finally:
            fail_open.stop()
        assert passed.status == 200
        assert len(stack.upstream.seen) == seen + 1


@pytest.mark.parametrize(
    ("source", "status"), [(BOOTSTRAP, 500), (EXT_AUTHZ, 503)], ids=["ratelimit", "ext_authz"]
)
async def test_redis_down_behind_creditgate_is_refused(
    demo_catalog: Catalog, tmp_path: Path, source: Path, status: int
) -> None:
    """UNAVAILABLE: the rate-limit filter answers 500, ext_authz its status_on_error (503)."""
    with EmbeddedRedis(data_dir=tmp_path / "redis") as redis:
        async with open_stack(redis.url, demo_catalog, tmp_path, source) as stack:
            await stack.account("env-lost", 5)
            assert (await get(stack.envoy.port, ask("env-lost"))).status == 200
            await asyncio.to_thread(redis.stop)
            seen = len(stack.upstream.seen)
            answer = await get(stack.envoy.port, ask("env-lost"))
            assert answer.status == status, answer
            assert len(stack.upstream.seen) == seen


@pytest.mark.parametrize("source", [BOOTSTRAP, EXT_AUTHZ], ids=["ratelimit", "ext_authz"])
async def test_redis_down_with_on_unavailable_allow_passes_and_is_counted(
    tmp_path: Path, source: Path
) -> None:
    """agent.message says ``on_unavailable: allow``: the request reaches the app, unbilled."""
    rpc = "ratelimit" if source == BOOTSTRAP else "ext_authz"
    labels = {"rpc": rpc, "action": "agent.message", "policy": "allow"}
    metric = "creditgate_decisions_without_redis_total"
    with EmbeddedRedis(data_dir=tmp_path / "redis") as redis:
        async with open_stack(redis.url, demo_allowing("agent.message"), tmp_path, source) as stack:
            await stack.account("env-open", 5)
            await asyncio.to_thread(redis.stop)
            before = REGISTRY.get_sample_value(metric, labels) or 0.0
            seen = len(stack.upstream.seen)
            answer = await get(stack.envoy.port, ask("env-open"))
            assert answer.status == 200, answer
            assert answer.headers["x-creditgate-reason"] == "UNAVAILABLE_ALLOWED"
            assert len(stack.upstream.seen) == seen + 1
            assert REGISTRY.get_sample_value(metric, labels) == before + 1
