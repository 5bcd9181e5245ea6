"""The engine as the settings configure it: the server's and the worker's (auto top-ups)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain.catalog import Catalog, load_catalog
from creditgate.engine import Engine, KeySpace

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.driver.pipelined import HotPath
    from creditgate.wiring.settings import Settings

__all__ = ["engine_for"]


def engine_for(
    settings: Settings, redis: Redis, catalog: Catalog | None = None, fast: HotPath | None = None
) -> Engine:
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
    )
