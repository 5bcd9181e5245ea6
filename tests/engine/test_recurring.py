"""Recurring charges inside the scripts (issue 20 §6): seed 000's base hosting fee.

A plan's recurring charge is debited at the start of each of its periods, through the pools
that pay for its action, all or nothing; when they cannot, ``on_short`` decides: ``stop`` the
account until it is paid, or ``skip`` the period. A real Redis, the test clock on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from creditgate.domain.errors import ConfigError, InvalidArgumentError
from creditgate.domain.results import Reason
from creditgate.domain.terms import Terms
from engine.conftest import catalog_from

if TYPE_CHECKING:
    from creditgate.engine import Engine

M = 1_000_000
T0 = 4_076_827_200_000  # 2099-03-10T12:00:00Z
APR1 = 4_078_684_800_000  # 2099-04-01T00:00:00Z
MAY1 = 4_081_276_800_000  # 2099-05-01T00:00:00Z
JUN1 = 4_083_955_200_000  # 2099-06-01T00:00:00Z
CATALOG = """
meters: {credit: credits}
actions:
  run: {meter: credit, cost: 1}
  hosting: {meter: credit, cost: 50}
plans:
  plain:
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 100, period: month}
  glue:
    recurring:
      - {id: hosting, action: hosting, period: month}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 100, period: month}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.10"}}
  small:
    recurring:
      - {id: hosting, action: hosting, period: month}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 40, period: month}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.10"}}
  blocks:
    recurring:
      - {id: hosting, action: hosting, quantity: 2, period: month}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 150, period: month}
      - {id: over, kind: overage, meter: credit, block_size: 100, block_price: "20.00",
         period: month}
  lenient:
    recurring:
      - {id: hosting, action: hosting, period: month, on_short: skip}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 40, period: month}
"""
Events = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
def engine(make_engine: Callable[[str], Engine]) -> Engine:
    return make_engine(CATALOG)


async def _open(engine: Engine, plan: str, acct: str = "a1", terms: Terms | None = None) -> None:
    """An account on ``plan`` from T0 on (created on a plan without fees, then moved)."""
    await engine.create_account(acct, "plain")
    await engine.advance_clock(acct, to_ms=T0)
    if terms is not None:
        await engine.set_terms(acct, terms)
    await engine.update_account(acct, plan_id=plan)


def _fees(log: list[Any]) -> list[tuple[str, dict[str, int]]]:
    return [(e.request_id, e.net()) for e in log if e.kind == "charge" and "rec" in e.fields]


def _notices(log: list[Any]) -> list[tuple[str, str]]:
    return [(e.fields["n"], e.request_id) for e in log if e.kind == "notice"]


def _pools(state: Any) -> dict[str, int]:  # noqa: ANN401 - AccountState or Decision
    rows = state.pools if hasattr(state, "pools") else state.balances
    return {p.pool_id: p.balance if hasattr(p, "balance") else p.remaining for p in rows}


async def test_charged_at_the_start_and_once_each_period(engine: Engine, events: Events) -> None:
    """The first period starts with the plan; each later 1st charges once, however many calls."""
    await _open(engine, "glue")
    assert _pools(await engine.balance("a1"))["base"] == 50 * M
    for _ in range(3):
        assert (await engine.consume("a1", "run", 1, {}, f"r{_}")).allowed
    await engine.advance_clock("a1", to_ms=APR1 + 1000)
    assert _pools(await engine.balance("a1"))["base"] == 50 * M  # the reset, then the fee
    assert _pools(await engine.balance("a1"))["base"] == 50 * M
    d = await engine.consume("a1", "run", 2, {}, "r9")
    assert d.allowed
    assert _pools(d)["base"] == 48 * M
    fees = _fees(await events(engine, "a1"))
    assert fees == [
        (f"rec:hosting:{T0}", {"base": -50 * M}),
        (f"rec:hosting:{APR1}", {"base": -50 * M}),
    ]


async def test_a_client_cannot_take_a_recurring_charge_id(engine: Engine, events: Events) -> None:
    """Request ids starting with rec: are refused: they would replay or relabel the charge."""
    await _open(engine, "glue")
    for rid in (f"rec:hosting:{APR1}", "rec:x"):
        with pytest.raises(InvalidArgumentError, match="ids of recurring charges; choose another"):
            await engine.consume("a1", "run", 1, {}, rid)
        with pytest.raises(InvalidArgumentError, match="reservation_id"):
            await engine.reserve("a1", "run", 1, {}, rid)
    assert _fees(await events(engine, "a1")) == [(f"rec:hosting:{T0}", {"base": -50 * M})]


async def test_the_first_branch_charges_a_due_fee_first(engine: Engine, events: Events) -> None:
    """A consume on the fast path in a new period falls through: the fee comes first."""
    await _open(engine, "glue")
    await engine.advance_clock("a1", to_ms=APR1)
    d = await engine.consume("a1", "run", 60, {}, "r1")  # 100 - 50 = 50 left: not enough
    assert not d.allowed
    assert d.reason == Reason.INSUFFICIENT_CREDITS
    assert (await engine.consume("a1", "run", 50, {}, "r2")).allowed
    assert [f[0] for f in _fees(await events(engine, "a1"))][-1] == f"rec:hosting:{APR1}"


async def test_every_missed_period_is_charged(engine: Engine, events: Events) -> None:
    """Periods passed without a call are charged at the next call, each once, as it was then.

    Each from its own period's allowance (reset at its start), not from today's: the catch-up
    never spends what the periods in between would not have.
    """
    await _open(engine, "glue")
    await engine.grant("a1", "wallet", 100 * M, "g1")
    await engine.advance_clock("a1", to_ms=JUN1 + 5)
    state = await engine.balance("a1")
    fees = [f[0] for f in _fees(await events(engine, "a1"))]
    assert fees == [f"rec:hosting:{t}" for t in (T0, APR1, MAY1, JUN1)]
    assert _pools(state) == {"base": 50 * M, "wallet": 100 * M}
    log = await events(engine, "a1")
    charged_at = [e.at for e in log if e.kind == "charge" and "rec" in e.fields]
    assert charged_at == [T0, APR1, MAY1, JUN1]  # each at its due


async def test_a_jump_over_periods_ends_as_steps_through_them(engine: Engine) -> None:
    """Charged at once for three months or month by month: the same pools, no overage bought.

    Each month's 100 comes out of that month's 150; today's 150 could not pay three (found
    trying it as a user: the jump bought a $20 block).
    """
    await _open(engine, "blocks", "jump")
    await _open(engine, "blocks", "steps")
    await engine.advance_clock("jump", to_ms=JUN1 + 1)
    for t in (APR1, MAY1, JUN1 + 1):
        await engine.advance_clock("steps", to_ms=t)
    jump, steps = await engine.balance("jump"), await engine.balance("steps")
    assert _pools(jump) == _pools(steps) == {"base": 50 * M, "over": 0}
    assert [p.spent for p in jump.pools] == [p.spent for p in steps.pools] == [0, 0]


async def test_unpaid_stops_the_account_until_money_pays_it(engine: Engine, events: Events) -> None:
    """on_short stop: notices once, ACCOUNT_STOPPED with no end; a grant pays it at once."""
    await _open(engine, "small")  # 40 credits cannot pay 50, the wallet is empty
    d = await engine.consume("a1", "run", 1, {}, "r1")
    assert not d.allowed
    assert d.reason == Reason.ACCOUNT_STOPPED
    assert d.retry_at == 0
    assert d.message.startswith(
        "run: the account is stopped until its recurring charge hosting (50 credit a month) is "
        "paid: money or credits that cover it (a purchase, a grant or a paid auto top-up, into a "
        "pool that pays for it) pay it at once"
    ), d.message
    assert "short by" not in d.message  # the pools are not what stops it
    assert not (await engine.consume("a1", "run", 1, {}, "r2")).allowed
    rid = f"rec:hosting:{T0}"
    log = await events(engine, "a1")
    assert _notices(log) == [("recurring_charge_failed", rid), ("account_stopped", rid)]
    failed = next(e for e in log if e.kind == "notice")
    assert (failed.fields["bal"], failed.fields["th"]) == (str(10 * M), str(50 * M))
    assert _fees(log) == []
    (state,) = (await engine.balance("a1")).recurring
    assert (state.recurring_id, state.cost, state.next_due, state.unpaid) == (
        "hosting",
        50 * M,
        T0,
        True,
    )
    await engine.advance_clock("a1", seconds=86_400)  # a day later, in the same period
    g = await engine.grant("a1", "wallet", 5 * M, "topup-1")  # $5 = 50 credits
    assert g.balance == 4 * M  # 40 credits of the allowance + $1 for the other 10
    log = await events(engine, "a1")
    assert _fees(log) == [(rid, {"base": -40 * M, "wallet": -1 * M})]
    paid = next(e for e in log if e.kind == "charge" and "rec" in e.fields)
    assert (paid.at, paid.fields["due"]) == (T0 + 86_400_000, str(T0))  # paid when the money came
    assert [e.kind for e in log if e.kind != "state"][-3:] == ["grant", "charge", "resume"]
    assert (await engine.consume("a1", "run", 1, {}, "r3")).allowed
    assert len(_notices(await events(engine, "a1"))) == 2  # no notice repeated
    (state,) = (await engine.balance("a1")).recurring
    assert (state.next_due, state.unpaid) == (APR1, False)


async def test_skip_lets_the_period_go_unpaid(engine: Engine, events: Events) -> None:
    """on_short skip: one notice, the account keeps running, the next period tries again."""
    await _open(engine, "lenient")
    assert (await engine.consume("a1", "run", 40, {}, "r1")).allowed
    await engine.advance_clock("a1", to_ms=APR1)
    assert (await engine.consume("a1", "run", 1, {}, "r2")).allowed
    rids = [f"rec:hosting:{T0}", f"rec:hosting:{APR1}"]
    assert _notices(await events(engine, "a1")) == [("recurring_charge_failed", r) for r in rids]
    assert _fees(await events(engine, "a1")) == []


async def test_terms_price_the_fee_per_account(engine: Engine, events: Events) -> None:
    """The fee is its action's price: terms make it cheaper, or free (nothing is charged)."""
    await _open(engine, "glue", "cheap", Terms(prices={"hosting": 20 * M}))
    await _open(engine, "glue", "free", Terms(prices={"hosting": 0}))
    assert _pools(await engine.balance("cheap"))["base"] == 80 * M
    assert _pools(await engine.balance("free"))["base"] == 100 * M
    assert _fees(await events(engine, "free")) == []
    await engine.set_terms("cheap", Terms())  # the plan's price from the next period on
    await engine.advance_clock("cheap", to_ms=APR1)
    assert _pools(await engine.balance("cheap"))["base"] == 50 * M


async def test_a_plan_without_the_fee_drops_its_marks(engine: Engine, events: Events) -> None:
    """Leaving the plan stops the fee; coming back starts a period (charged at once)."""
    await _open(engine, "glue")
    await engine.update_account("a1", plan_id="plain")
    await engine.advance_clock("a1", to_ms=APR1 + 10)
    await engine.balance("a1")
    await engine.update_account("a1", plan_id="glue")
    assert [f[0] for f in _fees(await events(engine, "a1"))] == [
        f"rec:hosting:{T0}",
        f"rec:hosting:{APR1 + 10}",
    ]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("{id: h, action: nope}", "unknown action 'nope'"),
        ("{id: h, action: free}", "is free"),
        ("{id: h, action: other}", "no pool of the plan pays"),
        ("{id: h, action: run}, {id: h, action: run}", "unique"),
        ("{id: h, action: run, on_short: later}", "stop. or .skip"),
    ],
)
def test_bad_recurring_entries_are_refused_by_name(entry: str, error: str) -> None:
    text = f"""
meters: {{credit: c, other: o}}
actions:
  run: {{meter: credit, cost: 1}}
  other: {{meter: other, cost: 1}}
  free: {{free: true}}
plans:
  p:
    recurring: [{entry}]
    pools:
      - {{id: base, kind: allowance, meter: credit, amount: 1, period: month}}
"""
    # The schema's own checks (on_short) raise pydantic's ValidationError, a ValueError.
    with pytest.raises((ConfigError, ValueError), match=error):
        catalog_from(text)
