"""The drilled deployment: a private Redis with AOF, a sidecar process, and a ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio
import yaml

from creditgate.domain.catalog import CatalogConfig, compile_catalog
from drill_kit import Drill, close_drill, open_drill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

# One grant pool paying one action: the catalog of the drills that charge a unit at a time.
WALLET = compile_catalog(
    CatalogConfig.model_validate(
        yaml.safe_load(
            """
meters: {tok: tokens}
actions:
  use: {meter: tok, cost: 1}
plans:
  p:
    order: [wallet]
    pools:
      - {id: wallet, kind: grant, meter: tok}
"""
        )
    )
)


@pytest_asyncio.fixture
async def drill(tmp_path: Path) -> AsyncIterator[Drill]:
    """A drilled deployment on the SQLite ledger."""
    d = await open_drill(tmp_path, f"sqlite:///{tmp_path}/ledger.db")
    try:
        yield d
    finally:
        await close_drill(d)
