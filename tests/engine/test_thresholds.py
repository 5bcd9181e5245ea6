"""Thresholds inside the charge script: notices, the spend cap reached, the auto top-up.

Low-balance and depleted notices, the spend cap reached, and the auto top-up a charge starts
(issue 20 §3-§4; seeds 000, 002/003, 004).

Each is edge-triggered: the script whose charge crosses writes the event, once per crossing,
and a notice re-arms when the balance rises above the threshold again. A top-up is level-
triggered but guarded: while one is in flight or paused no second one starts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.topup import AutoTopUp, parse_state

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.results import Decision
    from creditgate.engine import Engine

M = 1_000_000
T0 = 4_076_827_200_000  # 2099-03-10T12:00:00Z
CATALOG = """
meters: {credit: "test credits"}
actions:
  chat: {meter: credit, cost: 1}
plans:
  shingle:
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 2, period: day}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "1.00"}, low_balance: "3.00"}
  glue:
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 1, period: month}
      - {id: over, kind: overage, meter: credit, block_size: 10, block_price: "5.00",
         cap: "10.00", period: month}
  agent:
    pools:
      - {id: payg, kind: payg, unit: usd, rates: {credit: "1.00"}, cap: "3.00", period: cycle}
"""

Events = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def engine(make_engine: Callable[[str], Engine]) -> Engine:
    return make_engine(CATALOG)


async def _open(engine: Engine, plan: str, wallet: int = 0, acct: str = "a1") -> None:
    await engine.create_account(acct, plan)
    await engine.advance_clock(acct, to_ms=T0)
    if wallet:
        await engine.grant(acct, "wallet", wallet * M, "seed")


def _notices(log: list[Any]) -> list[tuple[str, str, str]]:
    return [(e.fields["n"], e.fields["pool"], e.fields["bal"]) for e in log if e.kind == "notice"]


async def test_low_and_depleted_fire_once_per_crossing_and_rearm(
    engine: Engine, events: Events
) -> None:
    """$6 wallet, default threshold $3: low at $3 (not again at $2), depleted at $0.

    A grant above the threshold re-arms both.
    """
    await _open(engine, "shingle", wallet=6)
    for i in range(2 + 6):  # 2 daily credits, then $1 per call from the wallet
        assert (await engine.consume("a1", "chat", 1, {}, f"c{i}")).allowed
    assert not (await engine.consume("a1", "chat", 1, {}, "c-denied")).allowed
    log = await events(engine, "a1")
    assert _notices(log) == [
        ("credit_balance_low", "wallet", str(3 * M)),
        ("credit_balance_depleted", "wallet", "0"),
    ]
    low = next(e for e in log if e.kind == "notice")
    assert (low.request_id, low.fields["th"]) == ("c4", str(3 * M))
    # Back above the threshold, then down through it again: a second crossing.
    await engine.grant("a1", "wallet", 5 * M, "more")
    for i in range(3):
        await engine.consume("a1", "chat", 1, {}, f"d{i}")
    assert _notices(await events(engine, "a1"))[2:] == [
        ("credit_balance_low", "wallet", str(3 * M))
    ]


async def test_one_charge_that_crosses_both_thresholds_writes_both(
    engine: Engine, events: Events
) -> None:
    await _open(engine, "shingle", wallet=6)
    assert (await engine.consume("a1", "chat", 8, {}, "big")).allowed
    assert [n[0] for n in _notices(await events(engine, "a1"))] == [
        "credit_balance_low",
        "credit_balance_depleted",
    ]


async def test_dry_runs_and_denials_cross_nothing(engine: Engine, events: Events) -> None:
    await _open(engine, "shingle", wallet=4)
    await engine.consume("a1", "chat", 2, {}, "daily")
    assert (await engine.consume("a1", "chat", 3, {}, "dry", dry_run=True)).allowed
    assert not (await engine.consume("a1", "chat", 5, {}, "too-much")).allowed
    assert _notices(await events(engine, "a1")) == []


async def test_one_top_up_under_100_concurrent_crossings(
    engine: Engine, events: Events, redis: AsyncRedis
) -> None:
    """The issue's test: 100 concurrent charges that cross the threshold start one top-up."""
    await _open(engine, "shingle", wallet=200)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(150 * M, 150 * M))
    gate = asyncio.Semaphore(16)  # the fixture's connection pool is bounded

    async def one(i: int) -> Decision:
        async with gate:
            return await engine.consume("a1", "chat", 1, {}, f"c{i}")

    results = await asyncio.gather(*(one(i) for i in range(102)))
    assert all(r.allowed for r in results)
    topups = [e for e in await events(engine, "a1") if e.kind == "topup"]
    assert len(topups) == 1
    (t,) = topups
    assert (t.fields["pool"], t.fields["amount"], t.fields["th"]) == (
        "wallet",
        str(150 * M),
        str(150 * M),
    )
    assert t.fields["bal"] == str(150 * M)
    state = parse_state(await redis.hget(engine.keys.account("a1")[0], "tu:wallet"))
    assert (state.phase, state.topup_id) == ("in_flight", t.request_id)


async def test_a_paid_top_up_ends_it_and_the_next_crossing_starts_another(
    engine: Engine, events: Events
) -> None:
    await _open(engine, "shingle", wallet=10)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(5 * M, 5 * M))
    await engine.consume("a1", "chat", 2 + 5, {}, "cross")
    (first,) = [e for e in await events(engine, "a1") if e.kind == "topup"]
    tid = first.request_id
    await engine.grant("a1", "wallet", 5 * M, f"topup:{tid}", ends=f"run:{tid}")
    await engine.consume("a1", "chat", 6, {}, "cross-again")
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 2


async def test_a_failed_top_up_pauses_until_a_purchase(
    engine: Engine, events: Events, redis: AsyncRedis
) -> None:
    """Seed 003: no automatic retry; a one-time purchase resumes it."""
    await _open(engine, "shingle", wallet=10)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(5 * M, 5 * M))
    await engine.consume("a1", "chat", 7, {}, "cross")
    (t,) = [e for e in await events(engine, "a1") if e.kind == "topup"]
    assert await engine.topup_paused("a1", "wallet", t.request_id, f"failed:{t.request_id}")
    assert not await engine.topup_paused("a1", "wallet", t.request_id, "failed:x")  # redelivered
    await engine.consume("a1", "chat", 1, {}, "below")
    assert not (await engine.consume("a1", "chat", 100, {}, "denied")).allowed
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 1
    key = engine.keys.account("a1")[0]
    assert parse_state(await redis.hget(key, "tu:wallet")).phase == "failed"
    await engine.grant("a1", "wallet", 20 * M, "purchase:p1", ends="failed")
    assert parse_state(await redis.hget(key, "tu:wallet")).phase == "idle"


async def test_a_denial_starts_a_top_up_and_the_monthly_maximum_pauses_it(
    engine: Engine, events: Events
) -> None:
    """A charge the wallet cannot pay starts a top-up even above the threshold.

    One paused at the monthly maximum starts again once its month is over.
    """
    await _open(engine, "shingle", wallet=10)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(1 * M, 5 * M, monthly_max=5 * M))
    assert not (await engine.consume("a1", "chat", 50, {}, "too-big")).allowed
    (t,) = [e for e in await events(engine, "a1") if e.kind == "topup"]
    until = T0 + 86_400_000
    assert await engine.topup_paused("a1", "wallet", t.request_id, f"max:{until}")
    assert not (await engine.consume("a1", "chat", 50, {}, "too-big-2")).allowed
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 1
    await engine.advance_clock("a1", to_ms=until)
    assert not (await engine.consume("a1", "chat", 50, {}, "too-big-3")).allowed
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 2


async def test_turning_it_on_below_the_threshold_starts_one_at_once(
    engine: Engine, events: Events
) -> None:
    await _open(engine, "shingle", wallet=2)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(5 * M, 10 * M))
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 1
    await engine.set_auto_topup("a1", "wallet", None)
    await engine.set_auto_topup("a1", "wallet", AutoTopUp(5 * M, 10 * M))  # one in flight still
    assert len([e for e in await events(engine, "a1") if e.kind == "topup"]) == 1


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (AutoTopUp(0, 4 * M), "between $5.00 and $100,000.00"),
        (AutoTopUp(0, 100_001 * M), "between $5.00 and $100,000.00"),
        (AutoTopUp(11 * M, 10 * M), "threshold must be between $0.00 and the purchase amount"),
        (AutoTopUp(1 * M, 10 * M, monthly_max=5 * M), "at least one top-up"),
        (AutoTopUp(1 * M, 10_005_000), "whole cents"),
    ],
)
async def test_settings_outside_the_limits_are_refused(
    engine: Engine, settings: AutoTopUp, words: str
) -> None:
    await _open(engine, "shingle")
    with pytest.raises(InvalidArgumentError, match=re.escape(words)):
        await engine.set_auto_topup("a1", "wallet", settings)


async def test_auto_top_up_is_for_balance_pools(engine: Engine) -> None:
    await _open(engine, "glue")
    with pytest.raises(InvalidArgumentError, match="balance pool"):
        await engine.set_auto_topup("a1", "over", AutoTopUp(0, 5 * M))


async def test_spend_cap_reached_once_per_period(engine: Engine, events: Events) -> None:
    """Seed 000: 1 credit, then blocks of 10 at $5 under a $10 cap: the second block reaches it."""
    await _open(engine, "glue")
    await engine.consume("a1", "chat", 1, {}, "base")
    await engine.consume("a1", "chat", 1, {}, "block-1")
    assert _notices(await events(engine, "a1")) == []
    await engine.consume("a1", "chat", 10, {}, "block-2")
    assert _notices(await events(engine, "a1")) == [("spend_cap_reached", "over", "0")]
    assert not (await engine.consume("a1", "chat", 50, {}, "denied")).allowed
    assert len(_notices(await events(engine, "a1"))) == 1


async def test_payg_cap_refusal_notifies_once(engine: Engine, events: Events) -> None:
    """Seed 004: a charge the cap refuses reports the cap reached, once in the cycle."""
    await _open(engine, "agent")
    assert (await engine.consume("a1", "chat", 2, {}, "c1")).allowed
    for i in range(3):
        assert not (await engine.consume("a1", "chat", 2, {}, f"over{i}")).allowed
    assert _notices(await events(engine, "a1")) == [("spend_cap_reached", "payg", str(1 * M))]


async def test_lowering_the_cap_below_spend_notifies_account_stopped(
    engine: Engine, events: Events
) -> None:
    await _open(engine, "glue")
    await engine.consume("a1", "chat", 11, {}, "spend")  # one block: $5
    await engine.set_pool_settings("a1", "over", cap=0)
    notes = _notices(await events(engine, "a1"))
    assert notes[-1] == ("account_stopped", "over", str(5 * M))
