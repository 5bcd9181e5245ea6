"""Examples for the reference model itself (creditgate.testing), one rule per test.

The property tests compare the model with the engine; these pin the model to the written rules
so that the two cannot drift away from the rules together.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from creditgate.domain.catalog import CatalogConfig, compile_catalog
from creditgate.domain.errors import FailedPreconditionError
from creditgate.domain.results import Reason
from creditgate.testing import ReferenceModel

M = 1_000_000
NOW = int(dt.datetime(2031, 3, 10, 12, tzinfo=dt.UTC).timestamp() * 1000)
APRIL = int(dt.datetime(2031, 4, 1, tzinfo=dt.UTC).timestamp() * 1000)
CATALOG = compile_catalog(
    CatalogConfig.model_validate(
        yaml.safe_load("""
meters: {tok: tokens}
actions:
  half: {meter: tok, cost: "0.5"}
  one: {meter: tok, cost: 1}
plans:
  wallet:
    pools:
      - {id: cash, kind: balance, unit: usd, rates: {tok: "0.000003"}}
  grants:
    pools:
      - {id: bonus, kind: grant, meter: tok}
  monthly:
    pools:
      - {id: base, kind: allowance, meter: tok, amount: 10, period: month}
      - {id: over, kind: overage, meter: tok, block_size: 7, block_price: 2, cap: 4,
         period: month}
  payg:
    pools:
      - {id: base, kind: allowance, meter: tok, amount: 10, period: month}
      - {id: pay, kind: payg, unit: usd, rates: {tok: "0.10"}, cap: 1, period: month}
""")
    )
)


@pytest.fixture
def model() -> ReferenceModel:
    return ReferenceModel(CATALOG)


def test_money_for_a_charge_is_rounded_up(model: ReferenceModel) -> None:
    """Half a token at 3 micro-dollars a token costs 2 micro-dollars (1.5 rounded up)."""
    model.create_account("a", "wallet", NOW)
    model.grant("a", "cash", 10, "g")
    d = model.consume("a", "half", 1, {}, "r")
    assert d.allowed
    assert [(m.amount, m.covered) for m in d.debits] == [(2, M // 2)]
    assert model.balance("a").pools[0].balance == 8


def test_partial_money_refunds_round_down_and_the_last_part_returns_the_rest(
    model: ReferenceModel,
) -> None:
    """2 half-tokens cost 3; refunding one returns 1 (1.5 down), the last returns exactly 2."""
    model.create_account("a", "wallet", NOW)
    model.grant("a", "cash", 10, "g")
    assert model.consume("a", "half", 2, {}, "r").debits[0].amount == 3
    first = model.refund("a", "r", "f1", 1)
    assert (first.returns[0].amount, first.refunded, first.refundable) == (-1, M // 2, M // 2)
    last = model.refund("a", "r", "f2")
    assert (last.returns[0].amount, last.refundable) == (-2, 0)
    assert model.balance("a").pools[0].balance == 10


def test_lots_are_used_soonest_expiring_first_and_never_expiring_last(
    model: ReferenceModel,
) -> None:
    """Lots go by expiry (ties by lot id); a lot that never expires is used after all others."""
    model.create_account("a", "grants", NOW)
    model.grant("a", "bonus", 3 * M, "never")
    model.grant("a", "bonus", 3 * M, "late", expires_at=NOW + 10 * 86_400_000)
    model.grant("a", "bonus", 3 * M, "b_soon", expires_at=NOW + 86_400_000)
    model.grant("a", "bonus", 3 * M, "a_soon", expires_at=NOW + 86_400_000)
    model.consume("a", "one", 7, {}, "r")
    lots = {lot.lot_id: lot.balance for lot in model.balance("a").pools[0].lots}
    assert lots == {"late": 2 * M, "never": 3 * M}


def test_returns_to_an_ended_period_expire_at_once(model: ReferenceModel) -> None:
    """A refund after the allowance renewed does not add to the new period's credits."""
    model.create_account("a", "monthly", NOW, anchor_day=1)
    model.consume("a", "one", 4, {}, "r")
    model.advance_clock("a", to_ms=APRIL)
    refund = model.refund("a", "r", "f")
    assert refund.refunded == 4 * M
    assert refund.returns[0].remaining == 10 * M
    assert model.balance("a").pools[0].balance == 10 * M


def test_returns_to_an_expired_lot_expire_at_once(model: ReferenceModel) -> None:
    """Credits released from a hold whose lot has expired meanwhile are not given back."""
    model.create_account("a", "grants", NOW)
    model.grant("a", "bonus", 5 * M, "g", expires_at=NOW + 1000)
    model.reserve("a", "one", 2, {}, "h", ttl_seconds=3600)
    model.advance_clock("a", seconds=2)
    release = model.release("a", "h")
    assert (release.released, release.returned) == (True, 2 * M)
    assert model.balance("a").pools[0].lots == ()


def test_overage_blocks_are_bought_whole_and_stop_at_the_cap(model: ReferenceModel) -> None:
    """Past the allowance, whole 7-token blocks at 2 each are bought up to a cap of 4."""
    model.create_account("a", "monthly", NOW, anchor_day=1)
    d = model.consume("a", "one", 12, {}, "r1")
    assert [(m.pool_id, m.amount, m.remaining) for m in d.debits] == [
        ("base", 10 * M, 0),
        ("over", 2 * M, 5 * M),
    ]
    assert model.consume("a", "one", 12, {}, "r2").allowed  # 5 left + one more block
    denied = model.consume("a", "one", 1, {}, "r3")
    assert (denied.allowed, denied.reason, denied.retry_at) == (
        False,
        Reason.SPEND_CAP_REACHED,
        APRIL,
    )


def test_lowering_an_overage_cap_below_spend_stops_the_account_until_renewal(
    model: ReferenceModel,
) -> None:
    """Seed 000: a cap below this month's spend stops every action until the pool resets."""
    model.create_account("a", "monthly", NOW, anchor_day=1)
    model.consume("a", "one", 12, {}, "r1")
    state = model.set_pool_settings("a", "over", cap=1 * M)
    assert state.stopped_until == APRIL
    d = model.consume("a", "one", 1, {}, "r2")
    assert (d.reason, d.retry_at) == (Reason.ACCOUNT_STOPPED, APRIL)
    model.advance_clock("a", to_ms=APRIL)
    assert model.consume("a", "one", 1, {}, "r3").allowed


def test_lowering_a_payg_cap_below_spend_only_empties_the_pool(model: ReferenceModel) -> None:
    """Seed 004: PAYG above the cap is blocked until the next cycle; the account is not stopped."""
    model.create_account("a", "payg", NOW, anchor_day=1)
    model.consume("a", "one", 15, {}, "r1")  # 10 from the allowance, 0.50 USD of PAYG
    state = model.set_pool_settings("a", "pay", cap=200_000)
    assert state.stopped_until == 0
    assert state.pools[1].balance == 0
    d = model.consume("a", "one", 1, {}, "r2")
    assert (d.reason, d.retry_at) == (Reason.SPEND_CAP_REACHED, APRIL)


def test_trial_accounts_cannot_use_payg(model: ReferenceModel) -> None:
    """PAYG is locked during a trial: past the allowance the answer is insufficient credits."""
    model.create_account("a", "payg", NOW, anchor_day=1, status="trial")
    d = model.consume("a", "one", 11, {}, "r")
    assert (d.allowed, d.reason, d.shortfall) == (False, Reason.INSUFFICIENT_CREDITS, M)
    assert d.retry_at == 0  # no renewal gives a trial 11 credits


def test_a_settled_reservation_replays_and_cannot_be_released(model: ReferenceModel) -> None:
    """A second settle answers the first one's result; releasing it afterwards is refused."""
    model.create_account("a", "monthly", NOW, anchor_day=1)
    model.reserve("a", "one", 5, {}, "h")
    first = model.settle("a", "h", 3)
    again = model.settle("a", "h", 4)
    assert again.replayed
    assert again.cost == first.cost == 3 * M
    with pytest.raises(FailedPreconditionError):
        model.release("a", "h")


@pytest.mark.parametrize(("plan", "grant"), [("monthly", None), ("payg", None), ("wallet", 99)])
def test_a_dry_run_answers_what_the_charge_would(
    model: ReferenceModel, plan: str, grant: int | None
) -> None:
    """Its debits and balances both after the would-be charge, as the real charge answers."""
    model.create_account("a", plan, NOW)
    if grant is not None:
        model.grant("a", "cash", grant, "g")
    dry = model.consume("a", "one", 12, {}, "dry", dry_run=True)
    real = model.consume("a", "one", 12, {}, "real")
    assert (dry.allowed, real.allowed) == (True, True)
    assert (dry.debits, dry.balances) == (real.debits, real.balances)
