"""Integer micro-units: the only representation of money and credits in creditgate."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICRO = 1_000_000
MAX_QUANTITY = 10**12  # the most units one request may ask for
# Lua numbers are doubles; every amount and every product the scripts form stays below 2**52 so
# that integer arithmetic there is exact (see engine/lua/lib.lua).
MAX_AMOUNT = 2**52 - 1
# A decimal as people type it, ASCII digits only: Decimal alone also takes "1_000" and digits of
# other scripts (Arabic-Indic 500), which nobody means as an amount.
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def to_micro(value: str | float | Decimal, *, what: str = "amount") -> int:
    """Parse a decimal amount (``"0.10"``, ``5``) into micro-units, exactly.

    Raises ValueError when it has more than six decimals, is not finite, or is too large, and
    TypeError for a bool.
    """
    if isinstance(value, bool):
        msg = f"{what}: expected a number, got {value!r}"
        raise TypeError(msg)
    if isinstance(value, str) and _DECIMAL.fullmatch(value) is None and _finite(value):
        msg = f"{what}: {value!r} is not a decimal number"
        raise ValueError(msg)
    try:
        dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        msg = f"{what}: {value!r} is not a decimal number"
        raise ValueError(msg) from None
    if not dec.is_finite():
        msg = f"{what}: {value!r} is not a finite number"
        raise ValueError(msg)
    micro = dec * MICRO
    if micro != micro.to_integral_value():
        msg = f"{what}: {value!r} has more than 6 decimal places"
        raise ValueError(msg)
    result = int(micro)
    if abs(result) > MAX_AMOUNT:
        msg = f"{what}: {value!r} exceeds the largest supported amount"
        raise ValueError(msg)
    return result


def _finite(text: str) -> bool:
    """False for what Decimal reads as NaN or infinity (refused as not finite, below)."""
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return True


def format_micro(micro: int) -> str:
    """Render micro-units as a plain decimal string (``1500000`` -> ``"1.5"``)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def ceil_div(a: int, b: int) -> int:
    """Ceiling of a / b for non-negative a and positive b."""
    return -(-a // b)


def money_ceil(meter: int, rate: int) -> int:
    """Money (micro) for ``meter`` micro-units at ``rate`` money micro per unit, rounded up."""
    return ceil_div(meter * rate, MICRO)


def money_floor(meter: int, rate: int) -> int:
    """Same as money_ceil, rounded down (used when returning part of a money debit)."""
    return meter * rate // MICRO


def meter_floor(money: int, rate: int) -> int:
    """Meter micro-units that ``money`` pays for at ``rate``, rounded down."""
    return money * MICRO // rate


def demand(quantity: int, unit_cost: int, per: int) -> int | None:
    """Meter micro-units for ``quantity`` units priced ``unit_cost`` per ``per`` units.

    Rounded up; None when the product leaves the exact range.
    """
    product = quantity * unit_cost
    if product > MAX_AMOUNT:
        return None
    return ceil_div(product, per)
