"""The sentences a person reads: one unit each, plain grammar, times in ISO 8601 UTC.

Money reads ``$12.50``, credits ``198,000 glue_credit``, times ``2031-03-10T12:00:00Z``; the
exact texts of spend caps, pool kinds, denials and past times, through a real engine and Redis.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from creditgate.domain import wording
from creditgate.domain.errors import InvalidArgumentError
from creditgate.engine import Engine

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog

M = 1_000_000
T0 = int(dt.datetime(2031, 3, 10, 12, tzinfo=dt.UTC).timestamp() * 1000)
PER_MICRO = "(cap counts micro-units: $1.00 = 1,000,000)"


@pytest.fixture
async def engine(redis: AsyncRedis, demo_catalog: Catalog) -> Engine:
    engine = Engine(redis, demo_catalog, test_clock=True)
    for account, plan in (
        ("glue", "glue_starter"),
        ("agent", "agent_team"),
        ("free", "agent_free"),
    ):
        await engine.create_account(account, plan)
        await engine.advance_clock(account, to_ms=T0)
    return engine


@pytest.mark.parametrize(
    ("micro", "unit", "money", "meter"),
    [
        (12_500_000, "usd", "$12.50", "12.5 usd"),
        (1_250 * M, "eur", "1,250.00 EUR", "1,250 eur"),
        (50, "usd", "$0.00005", "0.00005 usd"),
        (-5, "usd", "-$0.000005", "-0.000005 usd"),
        (0, "usd", "$0.00", "0 usd"),
    ],
)
def test_amounts_read_in_one_unit(micro: int, unit: str, money: str, meter: str) -> None:
    assert (wording.money(micro, unit), wording.quantity(micro, unit)) == (money, meter)


def test_times_read_as_iso_8601_utc() -> None:
    assert (wording.utc(T0), wording.utc(T0 + 250), wording.utc(0)) == (
        "2031-03-10T12:00:00Z",
        "2031-03-10T12:00:00.250Z",
        "1970-01-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("account", "pool", "cap", "text"),
    [
        ("agent", "payg", 50, f"between $100.00 and $1,000.00, got $0.00005 {PER_MICRO}"),
        ("agent", "payg", 5_000 * M, f"between $100.00 and $1,000.00, got $5,000.00 {PER_MICRO}"),
        ("glue", "overage", -5, f"$0.00 or more (-1: no cap), got -$0.000005 {PER_MICRO}"),
    ],
)
async def test_a_cap_out_of_range_reads_in_dollars(
    engine: Engine, account: str, pool: str, cap: int, text: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.set_pool_settings(account, pool, cap=cap)
    assert str(caught.value) == f"cap for pool {pool!r} must be {text}"


async def test_pool_kinds_take_their_article(engine: Engine) -> None:
    """'an allowance pool', 'an overage or payg pool' (it said 'a overage')."""
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.set_pool_settings("glue", "base", cap=5)
    assert str(caught.value) == (
        "pool 'base' is an allowance pool; this needs an overage or payg pool"
    )
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.grant("glue", "overage", M, "g-1")
    assert (
        str(caught.value) == "pool 'overage' is an overage pool; this needs a grant or balance pool"
    )


async def test_denials_read_in_credits_and_iso_times(engine: Engine) -> None:
    """Spend cap: the shortfall in credits, grouped; a denial that clears says when, in UTC."""
    capped = await engine.consume("glue", "glue.app_action", 200_000, {}, "c-1")
    assert capped.message == (
        "glue.app_action: the spend cap of the current period would be exceeded"
        " (short by 198,000 glue_credit)"
    )
    await engine.set_pool_settings("agent", "payg", enabled=True)
    payg = await engine.consume("agent", "agent.message", 5_000, {"model": "pro"}, "c-2")
    assert payg.message == (
        "agent.message: the spend cap of the current period would be exceeded"
        " (short by 12,000 agent_credit)"
    )
    light = {"model": "light", "feature": "chat"}
    assert (await engine.consume("free", "agent.message", 50, light, "c-3")).allowed
    daily = await engine.consume("free", "agent.message", 75, light, "c-4")
    assert daily.message == (
        "agent.message: not enough credits in the pools that accept this action"
        " (short by 25 agent_credit); it clears by itself at 2031-03-11T00:00:00Z"
    )


async def test_past_times_read_as_iso_8601_utc(engine: Engine) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.grant("free", "bonus", M, "g-2", expires_at=T0 - 1_000)
    assert str(caught.value) == (
        "expires_at 2031-03-10T11:59:59Z is not in the future: the account's clock reads"
        " 2031-03-10T12:00:00Z"
    )
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.advance_clock("free", to_ms=T0 - 250)
    assert str(caught.value) == (
        "to_unix_ms 2031-03-10T11:59:59.750Z is before the account's clock"
        " (2031-03-10T12:00:00Z); it only moves forward"
    )


@pytest.mark.parametrize(
    ("expires_at", "note", "message"),
    [
        (-1, "", "expires_at -1: give 0 (never expires) or a unix time in ms"),
        (0, "n" * 257, "note is 257 characters; at most 256"),
        (0, "a\x00b", "note contains a NUL character; remove it"),
    ],
)
async def test_a_bad_grant_names_the_field_that_is_wrong(
    engine: Engine, expires_at: int, note: str, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await engine.grant("free", "bonus", M, "g-3", expires_at=expires_at, note=note)
    assert str(caught.value) == message


def test_the_two_stops_read_apart() -> None:
    """The stop until renewal and the stop until a recurring charge is paid read apart.

    The first has a retry time, the second none; a Settle's answer carries no retry time and
    names both.
    """
    from creditgate.domain.results import Reason  # noqa: PLC0415
    from creditgate.engine.calls.common import reason_text  # noqa: PLC0415

    stopped = Reason.ACCOUNT_STOPPED
    assert "until its renewal" in reason_text(stopped, T0)
    assert "until a recurring charge of its plan is paid" in reason_text(stopped, 0)
    either = reason_text(stopped)
    assert "until its renewal or until a recurring charge" in either
