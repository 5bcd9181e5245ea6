"""The engine as the settings configure it: the server's and the worker's (auto top-ups)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain.catalog import Catalog, load_catalog
from creditgate.driver.cluster import ClusterFastRedis
from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine, KeySpace

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.driver.pipelined import HotPath
    from creditgate.wiring.settings import Settings

__all__ = ["engine_for", "hot_path_for"]


def hot_path_for(settings: Settings, url: str, *, cluster: bool) -> HotPath:
    """The pipelined connection (one per master on a cluster) to the Redis at ``url``."""
    return (ClusterFastRedis if cluster else FastRedis)(
        url,
        timeout=settings.redis_timeout_seconds,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


def engine_for(
    settings: Settings, redis: Redis, catalog: Catalog | None = None, fast: HotPath | None = None
) -> Engine:
    """The engine over ``redis`` and ``fast``.

    With CREDITGATE_REDIS_WAIT_REPLICAS every script call goes over the pipelined connection
    (it sends the WAIT): one is made from the settings when ``fast`` is None (the worker's).
    """
    replicated = settings.redis_wait_replicas > 0
    if replicated and fast is None:
        fast = hot_path_for(settings, settings.redis_url, cluster=settings.redis_cluster)
    return Engine(
        redis,
        catalog or load_catalog(settings.config),
        keys=KeySpace(settings.key_prefix, settings.shards),
        test_clock=settings.test_clock,
        idempotency_ttl_ms=settings.idempotency_ttl_seconds * 1000,
        hold_ttl_ms=settings.hold_ttl_seconds * 1000,
        fast=fast,
        combine=settings.combine_charges,
        require_request_id=settings.require_request_id,
        replicated=replicated,
    )
