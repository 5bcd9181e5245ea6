"""Per-account terms through the engine (issue 20 §6): seats, overrides, flags.

Seeds 004 (premium credits per seat) and 001 (integrations free for existing customers,
Enterprise "Custom") on examples/demo.yaml, and a small catalog for caps and rates; a real
Redis, the test clock on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.terms import Terms
from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from engine.conftest import catalog_from

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog

MICRO = 1_000_000
DAY_MS = 86_400_000
SMALL = """
meters: {credit: credits}
actions:
  use: {meter: credit, cost: 1}
  big: {meter: credit, cost: 5}
plans:
  basic:
    flag_prices: {partner: {big: 2}, friend: {big: 3}}
    pools:
      - {id: seats, kind: allowance, meter: credit, amount: 10, period: cycle, per_seat: true}
      - {id: shared, kind: allowance, meter: credit, amount: 5, period: cycle}
      - {id: payg, kind: payg, unit: usd, rates: {credit: "0.10"}, cap: "5", cap_min: "1",
         cap_max: "20", period: cycle}
"""


def pools(state: object) -> dict[str, int]:
    return {p.pool_id: p.balance for p in state.pools}  # type: ignore[attr-defined]


@pytest.fixture
def demo(redis: AsyncRedis, demo_catalog: Catalog) -> Engine:
    return Engine(redis, demo_catalog, test_clock=True)


@pytest.fixture
def small(redis: AsyncRedis) -> Engine:
    return Engine(redis, catalog_from(SMALL), test_clock=True)


async def test_premium_credits_are_per_seat(demo: Engine) -> None:
    """Seed 004: agent_team's premium allowance is 2,000 credits per seat each cycle."""
    state = await demo.create_account("team", "agent_team", terms=Terms(seats=5))
    assert pools(state)["premium"] == 10_000 * MICRO
    assert state.terms.seats == 5
    d = await demo.consume("team", "agent.message", 9_000, {"model": "pro"}, "r1")
    assert not d.allowed  # 27,000 credits: more than 10,000 premium + 100 daily
    d = await demo.consume("team", "agent.message", 3_000, {"model": "pro"}, "r2")
    assert d.allowed
    assert pools(await demo.balance("team"))["premium"] == 1_000 * MICRO


async def test_seats_changed_mid_period_change_this_periods_allowance_at_once(
    small: Engine,
) -> None:
    """Adding seats adds their credits now; removing them takes theirs, the use is kept as debt.

    The next period starts with the full allowance of the seats then.
    """
    await small.create_account("a", "basic", anchor_day=1, terms=Terms(seats=2))
    assert (await small.consume("a", "use", 15, {}, "r1")).allowed  # 20 -> 5 left
    state = await small.set_terms("a", Terms(seats=4))  # +20
    assert pools(state)["seats"] == 25 * MICRO
    state = await small.set_terms("a", Terms(seats=1))  # -30: 15 used of 10, debt 5
    assert pools(state)["seats"] == 0
    assert (await small.consume("a", "use", 3, {}, "r2")).allowed  # from shared
    state = await small.refund("a", "r2", "f1")
    assert pools(await small.balance("a"))["shared"] == 5 * MICRO
    await small.advance_clock("a", seconds=32 * 86_400)
    assert pools(await small.balance("a"))["seats"] == 10 * MICRO


async def test_flags_select_the_plans_flag_prices(demo: Engine) -> None:
    """Seed 001: Airtable, Sheets and Slack are free for existing customers, on zite_pro itself."""
    await demo.create_account("old", "zite_pro", terms=Terms(flags=("existing_customer",)))
    await demo.create_account("new", "zite_pro")
    for account in ("old", "new"):
        d = await demo.consume(account, "zite.slack", 1, {}, "s1")
        assert d.allowed
        d = await demo.consume(account, "zite.integration", 1, {}, "i1")
        assert d.cost == MICRO
    assert pools(await demo.balance("old"))["integration"] == 49_999 * MICRO
    assert pools(await demo.balance("new"))["integration"] == 49_998 * MICRO


async def test_the_lowest_flag_price_wins_and_an_account_price_wins_over_flags(
    small: Engine,
) -> None:
    await small.create_account("a", "basic", terms=Terms(flags=("friend", "partner")))
    assert (await small.consume("a", "big", 1, {}, "r1")).cost == 2 * MICRO
    await small.set_terms("a", Terms(flags=("friend", "partner"), prices={"big": 4 * MICRO}))
    assert (await small.consume("a", "big", 1, {}, "r2")).cost == 4 * MICRO
    await small.set_terms("a", Terms())
    assert (await small.consume("a", "big", 1, {}, "r3")).cost == 5 * MICRO


async def test_enterprise_custom_overrides_an_allowance_a_rate_and_the_cap_range(
    small: Engine,
) -> None:
    """Seed 001's Enterprise "Custom": the account's own amounts without a plan of its own."""
    custom = Terms(
        seats=3,
        allowances={"seats": 100 * MICRO, "shared": 0},
        rates={"payg": {"credit": 50_000}},
        caps={"payg": (10 * MICRO, 500 * MICRO)},
    )
    state = await small.create_account("ent", "basic", terms=custom)
    assert pools(state)["seats"] == 300 * MICRO
    assert pools(state)["shared"] == 0
    payg = next(p for p in state.pools if p.pool_id == "payg")
    assert payg.cap == 10 * MICRO  # the plan's $5 default moved into the range
    await small.set_pool_settings("ent", "payg", cap=400 * MICRO)  # beyond the plan's $20
    d = await small.consume("ent", "use", 310, {}, "r1")  # 10 beyond at $0.05
    assert d.allowed
    assert {m.pool_id: m.amount for m in d.debits}["payg"] == 500_000
    with pytest.raises(InvalidArgumentError, match="between"):
        await small.set_pool_settings("ent", "payg", cap=501 * MICRO)


@pytest.mark.parametrize(
    ("terms", "names"),
    [
        (Terms(seats=0), "seats must be 1-"),
        (Terms(allowances={"nope": 1}), "no allowance pool 'nope'"),
        (Terms(allowances={"payg": 1}), "no allowance pool 'payg'"),
        (Terms(prices={"fly": 1}), "unknown action 'fly'"),
        (Terms(rates={"payg": {"other": 1}}), "no rate for meter 'other'"),
        (Terms(rates={"payg": {"credit": 0}}), "rate must be 1-"),
        (Terms(caps={"payg": (5, 4)}), "cap_min <= cap_max"),
        (Terms(caps={"payg": (0, 2**63 - 1)}), "cap_max 9223372036854775807 micro-units is above"),
        (Terms(caps={"seats": (0, -1)}), "no overage or payg pool 'seats'"),
        (Terms(flags=("vip",)), "no plan's flag_prices names 'vip'"),
        (Terms(seats=10**6, allowances={"seats": 2**40}), "x 1000000 seats is outside"),
    ],
)
async def test_bad_terms_are_refused_naming_the_problem_and_change_nothing(
    small: Engine, terms: Terms, names: str
) -> None:
    before = await small.create_account("a", "basic", terms=Terms(seats=2))
    with pytest.raises(InvalidArgumentError, match=names):
        await small.set_terms("a", terms)
    assert await small.balance("a") == before
    with pytest.raises(InvalidArgumentError, match=names):
        await small.create_account("b", "basic", terms=terms)


async def test_terms_apply_to_the_plans_file_in_use_not_a_copy(redis: AsyncRedis) -> None:
    """Prices are not stored with the terms: a new plans file applies to them at once."""
    first = Engine(redis, catalog_from(SMALL), test_clock=True)
    await first.create_account("a", "basic", terms=Terms(flags=("partner",)))
    assert (await first.consume("a", "big", 1, {}, "r1")).cost == 2 * MICRO
    cheaper = Engine(redis, catalog_from(SMALL.replace("partner: {big: 2}", "partner: {big: 1}")))
    assert (await cheaper.consume("a", "big", 1, {}, "r2")).cost == MICRO


async def test_another_sidecar_learns_new_terms_on_its_next_call(redis: AsyncRedis) -> None:
    """A sidecar that priced the account before its terms changed elsewhere re-prices."""
    one = Engine(redis, catalog_from(SMALL), test_clock=True)
    two = Engine(redis, catalog_from(SMALL), test_clock=True)
    await one.create_account("a", "basic")
    assert (await two.consume("a", "big", 1, {}, "r1")).cost == 5 * MICRO
    await one.set_terms("a", Terms(prices={"big": 3 * MICRO}))
    assert (await two.consume("a", "big", 1, {}, "r2")).cost == 3 * MICRO
    replay = await two.consume("a", "big", 1, {}, "r2")
    assert replay.replayed
    assert replay.cost == 3 * MICRO


async def test_terms_stay_across_a_plan_change(demo: Engine) -> None:
    """Seats follow the account to agent_scale: 10,000 premium credits per seat there."""
    await demo.create_account("team", "agent_team", anchor_day=1, terms=Terms(seats=2))
    state = await demo.update_account("team", plan_id="agent_scale")
    assert state.terms.seats == 2
    assert pools(state)["premium"] == 20_000 * MICRO


async def test_the_pipelined_path_re_prices_after_terms_changed_elsewhere(
    redis_url: str, redis: AsyncRedis
) -> None:
    """The hot path's cached plan is refused by the script (PLAN) and the call re-priced."""
    conn = FastRedis(redis_url, timeout=2.0)
    try:
        quick = Engine(redis, catalog_from(SMALL), test_clock=True, fast=conn)
        admin = Engine(redis, catalog_from(SMALL), test_clock=True)
        await admin.create_account("a", "basic", terms=Terms(seats=2))
        assert (await quick.consume("a", "big", 1, {}, "r1")).cost == 5 * MICRO
        await admin.set_terms("a", Terms(seats=2, flags=("partner",)))
        d = await quick.consume("a", "big", 1, {}, "r2")
        assert d.cost == 2 * MICRO
        batch = await quick.consume_many([("a", "big", 2, {}, f"b{i}", False) for i in range(3)])
        assert [x.cost for x in batch] == [4 * MICRO] * 3  # type: ignore[union-attr]
        assert pools(await admin.balance("a"))["seats"] == (20 - 5 - 2 - 12) * MICRO
    finally:
        await conn.aclose()
