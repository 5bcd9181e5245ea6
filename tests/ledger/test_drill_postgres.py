"""Drill: the ledger's PostgreSQL stops under load (tests/drills has the Redis and sidecar drills).

Charges go on while the database is down (Redis is the gate; events wait in the stream), readiness
stays SERVING (it follows Redis, not the ledger), and once PostgreSQL is back the worker applies
everything: balances, ledger and reconcile agree, and every allowed id replays.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from drill_kit import Load, close_drill, open_drill

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import Postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def test_drill_postgres_down_under_load(tmp_path: Path, postgres: Postgres) -> None:
    """PostgreSQL down for 2 s under load: no charge fails, none is lost or doubled."""
    drill = await open_drill(tmp_path, postgres.url)
    try:
        load = Load(drill.quota, "P")
        load.start()
        await asyncio.sleep(1.0)
        down = time.monotonic()
        await postgres.outage_begin()
        await asyncio.sleep(2.0)
        await postgres.outage_end()
        up = time.monotonic()
        await asyncio.sleep(1.0)
        await load.stop()
        during = [a for a in load.attempts if down <= a.sent_at < up]
        drill.figures["calls_during_outage"] = len(during)
        drill.figures["failed_during_outage"] = sum(a.code != "OK" for a in during)
        assert during, "no load during the outage"
        assert all(a.code == "OK" for a in during), "a charge failed because the ledger was down"
        assert drill.health.first("NOT_SERVING", down) is None, "readiness followed the ledger"
        caught_up = time.monotonic()
        await drill.check_money([load])
        drill.figures["ledger_caught_up_ms"] = round((time.monotonic() - caught_up) * 1000)
        drill.record("postgres_down")
    finally:
        await close_drill(drill)
