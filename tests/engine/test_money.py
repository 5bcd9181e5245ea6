"""Micro-unit helpers: exact parsing and printing, and rounding that never favours the caller.

The same helpers exist in engine/lua/lib.lua (doubles, split to stay exact); the last test runs
both on the same inputs.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from importlib.resources import files
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from creditgate.domain.catalog import MAX_RATE
from creditgate.domain.money import (
    MAX_AMOUNT,
    MICRO,
    demand,
    format_micro,
    meter_floor,
    money_ceil,
    money_floor,
    to_micro,
)
from creditgate.engine.scripts import HEAD

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    LuaHelpers = Callable[[int, int, int], list[int]]

amounts = st.integers(min_value=0, max_value=MAX_AMOUNT)
rates = st.integers(min_value=1, max_value=MAX_RATE)


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        ("0.10", 100_000),
        ("0.000001", 1),
        ("1e-6", 1),
        (5, 5_000_000),
        ("5", 5_000_000),
        ("-1.5", -1_500_000),
        ("1.0000000", MICRO),  # trailing zeros past six decimals are still exact
        (0.1, 100_000),  # a float is read through its shortest repr, not its binary value
        (Decimal("2.25"), 2_250_000),
        ("4503599627.370495", MAX_AMOUNT),
        ("0", 0),
    ],
)
def test_to_micro_parses_exactly(value: str | float | Decimal, micro: int) -> None:
    """Decimal strings, ints, Decimals and floats become exact integer micro-units."""
    assert to_micro(value) == micro


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.0000001", "price: '0.0000001' has more than 6 decimal places"),
        ("4503599627.370496", "price: '4503599627.370496' exceeds the largest supported amount"),
        ("abc", "price: 'abc' is not a decimal number"),
        ("1_000", "price: '1_000' is not a decimal number"),
        ("\u0665\u0660\u0660", "price: '\u0665\u0660\u0660' is not a decimal number"),
        (" 5", "price: ' 5' is not a decimal number"),
        ("", "price: '' is not a decimal number"),
        ("NaN", "price: 'NaN' is not a finite number"),
        ("Infinity", "price: 'Infinity' is not a finite number"),
        (1e-7, "price: 1e-07 has more than 6 decimal places"),
    ],
)
def test_to_micro_refuses_what_is_not_exact(value: str | float, message: str) -> None:
    """Too many decimals, too large or not a number: ValueError naming the field."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        to_micro(value, what="price")


def test_to_micro_refuses_a_bool() -> None:
    """True is an int to Python, but never an amount."""
    with pytest.raises(TypeError, match=r"^price: expected a number, got True$"):
        to_micro(True, what="price")  # noqa: FBT003 - the bool is the point


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (100_000, "0.1"),
        (1_500_000, "1.5"),
        (10 * MICRO, "10"),
        (-1, "-0.000001"),
        (-1_500_000, "-1.5"),
        (MAX_AMOUNT, "4503599627.370495"),
    ],
)
def test_format_micro(micro: int, text: str) -> None:
    """Plain decimals: no exponent, no trailing zeros, no decimal point for whole units."""
    assert format_micro(micro) == text


@given(st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT))
def test_format_then_parse_round_trips(micro: int) -> None:
    """Every amount survives format_micro -> to_micro unchanged."""
    assert to_micro(format_micro(micro)) == micro


@pytest.mark.parametrize(
    ("meter", "rate", "up", "down"),
    [
        (0, 370_000, 0, 0),
        (1, 1, 1, 0),  # one micro-credit at one micro-dollar a credit: rounds up to 1 micro-dollar
        (MICRO, 370_000, 370_000, 370_000),
        (2_972_972, 370_000, 1_100_000, 1_099_999),
        (3 * MICRO, 370_000, 1_110_000, 1_110_000),
        (MICRO + 1, 1, 2, 1),
    ],
)
def test_money_rounding_examples(meter: int, rate: int, up: int, down: int) -> None:
    """Charges round up, returns round down."""
    assert (money_ceil(meter, rate), money_floor(meter, rate)) == (up, down)


@pytest.mark.parametrize(
    ("money", "rate", "meter"),
    [
        (0, 370_000, 0),
        (1_100_000, 370_000, 2_972_972),
        (1_110_000, 370_000, 3 * MICRO),
        (1, MAX_RATE, 0),  # a micro-dollar buys nothing at 1000 dollars a unit
        (1, 1, MICRO),
    ],
)
def test_meter_floor_examples(money: int, rate: int, meter: int) -> None:
    """What a money balance can pay for, rounded down."""
    assert meter_floor(money, rate) == meter


def test_demand_rounds_up_and_stops_at_the_exact_range() -> None:
    """Quantity x unit cost / per, rounded up; None past 2^52."""
    assert demand(3, MICRO, 1) == 3 * MICRO
    assert demand(1, 1, 3) == 1
    assert demand(7, 1_000, 1_000) == 7
    assert demand(MAX_AMOUNT, 1, 1) == MAX_AMOUNT
    assert demand(MAX_AMOUNT, 2, 2) is None  # the product is checked, not the result


@given(amounts, rates)
def test_charges_never_favour_the_caller(meter: int, rate: int) -> None:
    """money_ceil is the exact price or at most one micro-unit above it, never below."""
    exact = Fraction(meter * rate, MICRO)
    assert exact <= money_ceil(meter, rate) < exact + 1


@given(amounts, rates)
def test_returns_never_exceed_the_exact_amount(meter: int, rate: int) -> None:
    """money_floor is the exact amount or at most one micro-unit below it, and <= money_ceil."""
    exact = Fraction(meter * rate, MICRO)
    assert exact - 1 < money_floor(meter, rate) <= exact
    assert money_floor(meter, rate) <= money_ceil(meter, rate)


@given(amounts, rates)
def test_what_money_pays_for_is_affordable_and_maximal(money: int, rate: int) -> None:
    """meter_floor(money) costs at most money, and one micro-unit more would cost more."""
    covered = meter_floor(money, rate)
    assert money_ceil(covered, rate) <= money
    assert money_ceil(covered + 1, rate) > money


_LUA_PROBE = """
local m, r, money = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
return {fmt(money_ceil(m, r)), fmt(money_floor(m, r)), fmt(meter_floor(money, r))}
"""


@pytest.fixture(scope="module")
def lua_helpers(redis_url: str) -> Iterator[LuaHelpers]:
    """core.lua's and lib.lua's helpers as one EVAL-able function of (meter, rate, money)."""
    client = Redis.from_url(redis_url)
    lib = "\n".join(
        (files("creditgate.engine") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
        for name in ("core", "lib")
    )
    script = client.register_script(f"{HEAD}\n{lib}{_LUA_PROBE}")

    def run(meter: int, rate: int, money: int) -> list[int]:
        # KEYS[1] is read as an account hash; ARGV[1..4] are the common header with no pools.
        args = ["probe", "", "0", "0", meter, rate, money]
        return [int(x) for x in script(keys=["{probe}:none"], args=args)]

    yield run
    client.close()


# Lua computes with doubles: exact as long as every result stays below 2^52, which the engine
# guarantees for the amounts it charges (demand <= 2^52, balances <= 2^52).
@settings(max_examples=300, deadline=None)
@given(amounts, rates, amounts, st.data())
def test_lua_helpers_agree_with_python(
    lua_helpers: LuaHelpers, meter: int, rate: int, money: int, data: st.DataObject
) -> None:
    """money_ceil, money_floor and meter_floor give the same integers in Lua and Python."""
    meter = data.draw(st.integers(0, min(meter, MAX_AMOUNT * MICRO // rate)), label="meter")
    money = min(money, MAX_AMOUNT * rate // MICRO)
    expected = [money_ceil(meter, rate), money_floor(meter, rate), meter_floor(money, rate)]
    assert lua_helpers(meter, rate, money) == expected
