"""Purchase limits in the plans file: checked like the rest of it, each error its own text."""

from __future__ import annotations

import pytest
import yaml

from creditgate.domain.catalog import CatalogConfig, compile_catalog
from creditgate.domain.errors import ConfigError
from creditgate.domain.purchase import PurchaseLimits

PLANS = """
meters: {m: "m"}
actions: {use: {meter: m, cost: 1}}
plans:
  p:
    purchase: {purchase}
    pools: {pools}
"""
WALLET = '[{id: wallet, kind: balance, unit: usd, rates: {m: "0.01"}}]'
TWO = (
    '[{id: a, kind: balance, unit: usd, rates: {m: "0.01"}},'
    ' {id: b, kind: balance, unit: usd, rates: {m: "0.01"}}]'
)


def compiled(purchase: str, pools: str = WALLET) -> PurchaseLimits | None:
    raw = yaml.safe_load(PLANS.replace("{purchase}", purchase).replace("{pools}", pools))
    return compile_catalog(CatalogConfig.model_validate(raw)).plans["p"].purchase


def test_limits_compile_to_micro_units() -> None:
    """ShingleAI's $5 / $1,000 / $10, in micro-units, landing in the only balance pool."""
    limits = compiled('{min: 5, max: 1000, default: "10.00"}')
    assert limits == PurchaseLimits("wallet", "usd", 5_000_000, 1_000_000_000, 10_000_000)


@pytest.mark.parametrize(
    ("purchase", "pools", "message"),
    [
        ("{min: 10, max: 5, default: 7}", WALLET, "need 0 < min (10) <= default (7) <= max (5)"),
        ("{min: 0, max: 5, default: 1}", WALLET, "need 0 < min (0) <= default (1) <= max (5)"),
        ('{min: 5, max: 10, default: "7.001"}', WALLET, "must be whole cents"),
        ("{min: 5, max: 10, default: 7}", "[]", "the plan has no balance pool"),
        ("{min: 5, max: 10, default: 7}", TWO, "pool must name one of the plan's balance pools"),
        ("{min: 5, max: 10, default: 7, pool: c}", TWO, "balance pools (a, b)"),
    ],
)
def test_bad_limits_are_refused(purchase: str, pools: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compiled(purchase, pools)
    assert message in str(info.value)
    assert str(info.value).startswith("plan p purchase:")


def test_two_balance_pools_name_one() -> None:
    limits = compiled("{min: 5, max: 10, default: 7, pool: b}", TWO)
    assert limits is not None
    assert limits.pool == "b"


def test_floats_are_refused() -> None:
    """As everywhere in the plans file: 9.99 is not exact; write it as a string."""
    with pytest.raises(Exception, match="floats are not exact"):
        compiled("{min: 5, max: 10, default: 9.99}")
