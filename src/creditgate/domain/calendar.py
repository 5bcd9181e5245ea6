"""Period boundaries in UTC, the same arithmetic as engine/lua/lib.lua (next_reset)."""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Literal

Period = Literal["day", "month", "cycle"]
DAY_MS = 86_400_000


def _month_start_ms(year: int, month: int, anchor: int) -> int:
    day = min(anchor, calendar.monthrange(year, month)[1])
    return int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()) * 1000


def next_reset(period: str, now_ms: int, anchor: int) -> int:
    """The first boundary strictly after ``now_ms``.

    ``day``: next UTC midnight. ``month``: the next 1st (UTC). ``cycle``: the next occurrence of
    the account's anchor day, clamped to the month's last day (anchor 31 renews on Feb 28/29).
    """
    if period == "day":
        return (now_ms // DAY_MS + 1) * DAY_MS
    if period == "month":
        anchor = 1
    today = dt.datetime.fromtimestamp(now_ms // DAY_MS * 86_400, tz=dt.UTC)
    year, month = today.year, today.month
    candidate = _month_start_ms(year, month, anchor)
    if candidate > now_ms:
        return candidate
    month += 1
    if month == 13:  # noqa: PLR2004 - December rolls into January
        year, month = year + 1, 1
    return _month_start_ms(year, month, anchor)


def month_start(now_ms: int) -> int:
    """The start of ``now_ms``'s calendar month (UTC)."""
    today = dt.datetime.fromtimestamp(now_ms // DAY_MS * 86_400, tz=dt.UTC)
    return _month_start_ms(today.year, today.month, 1)
