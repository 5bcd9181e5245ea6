"""The ``secured`` fixture: the demo catalog behind bearer tokens (see tests/auth_kit.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from auth_kit import Secured, secured_sidecar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog


@pytest_asyncio.fixture
async def secured(
    redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path
) -> AsyncIterator[Secured]:
    """The demo catalog behind tokens, no ledger (audit rows go to the log only)."""
    async for s in secured_sidecar(redis, demo_catalog, tmp_path):
        yield s
