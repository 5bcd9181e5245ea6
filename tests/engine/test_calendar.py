"""Period boundaries: hand-computed cases for the Python reference and the Lua engine.

``next_reset`` exists twice, in ``creditgate.domain.calendar`` and in ``engine/lua/lib.lua``; the
engine's answers reach callers as ``next_reset`` and ``retry_at``, so both must agree exactly.
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import TYPE_CHECKING

import pytest
import yaml

from creditgate.domain.calendar import next_reset
from creditgate.domain.catalog import CatalogConfig, compile_catalog
from creditgate.engine import Engine

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

DAY_MS = 86_400_000
# 400 Gregorian years are exactly 146,097 days (and a whole number of weeks), so a date moved by
# 400 years falls on the same calendar. The engine's test clock starts at the real time and only
# moves forward, so the Lua checks replay each case 400 years later, safely in its future.
SHIFT_MS = 146_097 * DAY_MS

PLANS = """
meters: {credit: "test credits"}
actions:
  work: {meter: credit, cost: 1}
plans:
  periods:
    pools:
      - {id: d, kind: allowance, meter: credit, amount: 1, period: day}
      - {id: m, kind: allowance, meter: credit, amount: 1, period: month}
      - {id: c, kind: allowance, meter: credit, amount: 1, period: cycle}
"""
POOL_OF = {"day": "d", "month": "m", "cycle": "c"}


def ms(text: str) -> int:
    """Unix ms of a UTC time written as ISO 8601 without a zone."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


# (period, anchor day, now, the boundary worked out by hand)
CASES = [
    # day: the next UTC midnight, strictly after now
    ("day", 1, "2027-03-10T15:30:00", "2027-03-11T00:00:00"),
    ("day", 1, "2027-03-10T00:00:00", "2027-03-11T00:00:00"),
    ("day", 1, "2027-03-10T23:59:59.999", "2027-03-11T00:00:00"),
    ("day", 1, "2027-12-31T12:00:00", "2028-01-01T00:00:00"),
    ("day", 31, "2028-02-28T08:00:00", "2028-02-29T00:00:00"),
    # month: the next 1st (UTC); the account's anchor plays no part
    ("month", 17, "2027-01-31T12:00:00", "2027-02-01T00:00:00"),
    ("month", 1, "2027-12-15T00:00:00", "2028-01-01T00:00:00"),
    ("month", 1, "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
    ("month", 31, "2027-01-31T23:59:59.999", "2027-02-01T00:00:00"),
    # cycle, anchor 31: clamped to the last day of short months
    ("cycle", 31, "2027-01-15T10:00:00", "2027-01-31T00:00:00"),
    ("cycle", 31, "2027-01-31T00:00:00", "2027-02-28T00:00:00"),
    ("cycle", 31, "2027-02-04T00:00:00", "2027-02-28T00:00:00"),
    ("cycle", 31, "2027-02-27T23:59:59.999", "2027-02-28T00:00:00"),
    ("cycle", 31, "2027-02-28T00:00:00", "2027-03-31T00:00:00"),
    ("cycle", 31, "2027-04-10T00:00:00", "2027-04-30T00:00:00"),
    ("cycle", 31, "2027-04-30T00:00:00", "2027-05-31T00:00:00"),
    ("cycle", 31, "2027-12-31T00:00:00", "2028-01-31T00:00:00"),
    ("cycle", 31, "2028-02-04T00:00:00", "2028-02-29T00:00:00"),
    ("cycle", 31, "2028-02-28T12:00:00", "2028-02-29T00:00:00"),
    ("cycle", 31, "2028-02-29T00:00:00", "2028-03-31T00:00:00"),
    ("cycle", 31, "2100-02-04T00:00:00", "2100-02-28T00:00:00"),  # 2100 is not a leap year
    # cycle, anchor 30 and 29
    ("cycle", 30, "2027-01-30T00:00:00", "2027-02-28T00:00:00"),
    ("cycle", 30, "2027-02-10T00:00:00", "2027-02-28T00:00:00"),
    ("cycle", 30, "2028-02-10T00:00:00", "2028-02-29T00:00:00"),
    ("cycle", 30, "2027-03-29T23:59:59.999", "2027-03-30T00:00:00"),
    ("cycle", 30, "2027-03-30T00:00:00", "2027-04-30T00:00:00"),
    ("cycle", 29, "2027-02-01T00:00:00", "2027-02-28T00:00:00"),
    ("cycle", 29, "2028-02-01T00:00:00", "2028-02-29T00:00:00"),
    ("cycle", 29, "2027-02-28T00:00:00", "2027-03-29T00:00:00"),
    # cycle, anchor 1 and mid-month
    ("cycle", 1, "2027-06-01T00:00:00", "2027-07-01T00:00:00"),
    ("cycle", 1, "2027-05-31T23:59:59.999", "2027-06-01T00:00:00"),
    ("cycle", 1, "2027-12-31T23:59:59.999", "2028-01-01T00:00:00"),
    ("cycle", 15, "2027-03-14T23:59:59.999", "2027-03-15T00:00:00"),
    ("cycle", 15, "2027-03-15T00:00:00", "2027-04-15T00:00:00"),
    ("cycle", 15, "2027-03-15T00:00:00.001", "2027-04-15T00:00:00"),
]
IDS = [f"{p}-a{a}-{now}" for p, a, now, _ in CASES]


def _engine(redis: AsyncRedis) -> Engine:
    catalog = compile_catalog(CatalogConfig.model_validate(yaml.safe_load(PLANS)))
    return Engine(redis, catalog, test_clock=True)


@pytest.mark.parametrize(("period", "anchor", "now", "expected"), CASES, ids=IDS)
def test_python_next_reset_matches_hand_computed(
    period: str, anchor: int, now: str, expected: str
) -> None:
    """The reference gives the first boundary strictly after now, anchors clamped."""
    assert next_reset(period, ms(now), anchor) == ms(expected)


async def test_lua_next_reset_matches_hand_computed(redis: AsyncRedis) -> None:
    """Each case through the engine's test clock: Lua, Python and the hand value agree."""
    engine = _engine(redis)
    for i, (period, anchor, now, expected) in enumerate(CASES):
        acct = f"cal-{i}"
        await engine.create_account(acct, "periods", anchor_day=anchor)
        state = await engine.advance_clock(acct, to_ms=ms(now) + SHIFT_MS)
        assert state.now == ms(now) + SHIFT_MS
        resets = {p.pool_id: p.next_reset for p in state.pools}
        assert resets[POOL_OF[period]] == ms(expected) + SHIFT_MS, IDS[i]
        for name, pool in POOL_OF.items():
            assert resets[pool] == next_reset(name, state.now, anchor), (IDS[i], name)


def _around_boundaries(anchor: int, years: range) -> list[int]:
    """Each month's anchored boundary, 1 ms before, at and 1 ms after it."""
    out = []
    for year in years:
        for month in range(1, 13):
            day = min(anchor, calendar.monthrange(year, month)[1])
            edge = int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()) * 1000
            out += [edge - 1, edge, edge + 1]
    return out


@pytest.mark.parametrize("anchor", [1, 15, 28, 29, 30, 31])
async def test_lua_and_python_agree_around_every_boundary(
    redis: AsyncRedis,
    anchor: int,
) -> None:
    """Walking one account across three years (one a leap year), both sides agree at each edge."""
    engine = _engine(redis)
    acct = f"walk-{anchor}"
    await engine.create_account(acct, "periods", anchor_day=anchor)
    for t in _around_boundaries(anchor, range(2427, 2430)):
        state = await engine.advance_clock(acct, to_ms=t)
        for p in state.pools:
            assert p.next_reset == next_reset(p.period, t, anchor), (t, p.pool_id)
