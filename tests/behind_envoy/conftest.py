"""``stack``: one real-Envoy stack per module (envoy_kit.open_stack) on the demo catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from envoy_kit import Stack, open_stack

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from creditgate.domain.catalog import Catalog


@pytest_asyncio.fixture(scope="module")
async def stack(
    redis_url: str, demo_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with open_stack(redis_url, demo_catalog, tmp_path_factory.mktemp("envoy")) as built:
        yield built
