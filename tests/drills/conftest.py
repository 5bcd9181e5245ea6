"""The drilled deployment: a private Redis with AOF, a sidecar process, and a ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from drill_kit import Drill, close_drill, open_drill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest_asyncio.fixture
async def drill(tmp_path: Path) -> AsyncIterator[Drill]:
    """A drilled deployment on the SQLite ledger."""
    d = await open_drill(tmp_path, f"sqlite:///{tmp_path}/ledger.db")
    try:
        yield d
    finally:
        await close_drill(d)
