"""How amounts, times and nouns read in messages a person acts on.

Messages show one unit a person reads: money as ``$12.50`` (other currencies ``12.50 EUR``),
credits and other meters as ``1,250 glue_credit``, times as ISO 8601 in UTC. The API itself
keeps integers (micro-units, unix ms); a message about a field names the value that was sent.
"""

from __future__ import annotations

import datetime as dt

from creditgate.domain.money import MICRO

_SYMBOLS = {"usd": "$"}
_CURRENCIES = frozenset({"usd", "eur", "gbp", "chf", "jpy", "cad", "aud"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article: ``an overage``, ``a payg``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _grouped(micro: int, min_decimals: int) -> str:
    """``1234567891`` -> ``1,234.567891``; at least ``min_decimals`` decimals."""
    whole, frac = divmod(abs(micro), MICRO)
    digits = f"{frac:06d}".rstrip("0").ljust(min_decimals, "0")
    return f"{whole:,}" + (f".{digits}" if digits else "")


def money(micro: int, unit: str) -> str:
    """Micro-units of a currency: ``$12.50``, ``$0.00005``, ``12.50 EUR``."""
    sign = "-" if micro < 0 else ""
    text = _grouped(micro, 2)
    symbol = _SYMBOLS.get(unit.lower())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {unit.upper()}"


def quantity(micro: int, unit: str) -> str:
    """Micro-units of a meter: ``1,250 glue_credit``, ``12.5 agent_credit``."""
    sign = "-" if micro < 0 else ""
    return f"{sign}{_grouped(micro, 0)} {unit}".rstrip()


def amount(micro: int, unit: str) -> str:
    """Money in its currency (``$12.50``), anything else as a meter (``5 glue_credit``)."""
    return money(micro, unit) if unit.lower() in _CURRENCIES else quantity(micro, unit)


def utc(unix_ms: int) -> str:
    """A unix time in ms as ISO 8601 UTC: ``2031-03-10T12:00:00Z`` (``.250Z`` with ms)."""
    at = _EPOCH + dt.timedelta(milliseconds=unix_ms)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{unix_ms % 1000:03d}Z" if unix_ms % 1000 else f"{text}Z"
