"""The period of ``GetUsage``: a calendar month or a range of days, in UTC, as [since, until) ms."""

from __future__ import annotations

import datetime as dt
import re

from creditgate.domain.errors import InvalidArgumentError

__all__ = ["MAX_DAYS", "usage_period"]

MAX_DAYS = 366
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


_EPOCH = dt.date(1970, 1, 1)
_DAY_MS = 86_400_000


def _ms(day: dt.date) -> int:
    return (day - _EPOCH).days * _DAY_MS


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


_LAST_YEAR = 9998  # a period's end (the day or month after) must still be a date


def _date(text: str, pattern: re.Pattern[str], shown: str) -> dt.date | None:
    """The date ``text`` names, None if it names none; a year past 9998 is refused."""
    if pattern.fullmatch(text) is None:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    if day.year > _LAST_YEAR:
        msg = f"{shown}: a period must end by the end of year {_LAST_YEAR}"
        raise InvalidArgumentError(msg)
    return day


def _day(text: str, name: str) -> dt.date:
    day = _date(text, _DAY, f"{name} {text!r}")
    if day is None:
        msg = f"{name} {text!r}: give a day as YYYY-MM-DD (UTC), e.g. 2026-03-01"
        raise InvalidArgumentError(msg)
    return day


def usage_period(month: str, from_day: str, to_day: str, now_ms: int) -> tuple[int, int]:
    """[since, until) in unix ms of a usage period.

    ``month`` (YYYY-MM), the days ``from_day``..``to_day`` (inclusive), or, with none of them,
    the month ``now_ms`` is in.
    """
    if month and (from_day or to_day):
        msg = "give either month or from_day/to_day, not both"
        raise InvalidArgumentError(msg)
    if bool(from_day) != bool(to_day):
        msg = "a range of days needs both from_day and to_day (YYYY-MM-DD, both inclusive)"
        raise InvalidArgumentError(msg)
    if from_day:
        first, last = _day(from_day, "from_day"), _day(to_day, "to_day")
        if last < first:
            msg = f"to_day {to_day} is before from_day {from_day}"
            raise InvalidArgumentError(msg)
        if (last - first).days + 1 > MAX_DAYS:
            msg = f"{from_day}..{to_day} is {(last - first).days + 1} days; at most {MAX_DAYS}"
            raise InvalidArgumentError(msg)
        return _ms(first), _ms(last + dt.timedelta(days=1))
    if month:
        shown = f"month {month!r}"
        month_start = _date(f"{month}-01", _DAY, shown) if _MONTH.fullmatch(month) else None
        if month_start is None:
            msg = f"month {month!r}: give YYYY-MM (UTC), e.g. 2026-03"
            raise InvalidArgumentError(msg)
        start = month_start
    else:
        start = (_EPOCH + dt.timedelta(days=now_ms // _DAY_MS)).replace(day=1)
    return _ms(start), _ms(_next_month(start))
