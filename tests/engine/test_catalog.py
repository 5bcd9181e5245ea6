"""The plans file: each bad file is its own fixture and fails with the exact text an operator sees.

The fixtures live in tests/fixtures/bad_catalogs/; a new fixture without an expected message here
fails ``test_every_bad_fixture_is_checked``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from creditgate.domain.catalog import Price, load_catalog
from creditgate.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "fixtures" / "bad_catalogs"
DEMO = ROOT / "examples" / "demo.yaml"
M = 1_000_000

# fixture name -> what load_catalog says after "plans file <path>"
EXPECTED = {
    "unknown_meter": ": plan basic pool base: unknown meter 'tokens' (declare it under meters)",
    "allowance_without_period": (
        " is invalid:\n  plans.basic.pools.0: Value error, pool base: an allowance needs an "
        "amount and a period"
    ),
    "float_amount": (
        " is invalid:\n  plans.basic.pools.0.amount: Value error, write 1.5 as a string "
        '("1.5"): floats are not exact'
    ),
    "seven_decimals": ": action work cost: '0.0000001' has more than 6 decimal places",
    "order_missing_pool": (
        ": plan basic: order must name every pool exactly once: ['base', 'bonus']"
    ),
    "duplicate_pool_id": ": plan basic: pool ids must be unique",
    "payg_without_rates": (
        " is invalid:\n  plans.basic.pools.0: Value error, pool payg: a payg pool needs rates "
        "(money per meter unit)"
    ),
    "rate_above_max": (
        ": plan basic pool wallet: rate credit must be above 0 and at most 1000 per unit"
    ),
    "overage_without_block_price": (
        " is invalid:\n  plans.basic.pools.1: Value error, pool extra: an overage pool needs a "
        "block_price"
    ),
    "overage_without_meter": (
        " is invalid:\n  plans.basic.pools.1: Value error, pool extra: an overage pool needs a "
        "meter"
    ),
    "override_unknown_action": ": plan basic: price override for unknown action 'play'",
    "negative_allowance": (
        ": plan basic pool base amount: -100 is negative; amounts, prices and caps are 0 or more"
    ),
    "negative_cost": (
        ": action work cost: '-0.5' is negative; amounts, prices and caps are 0 or more"
    ),
    "cap_outside_range": ": plan basic pool payg: cap (50) is outside cap_min..cap_max",
    "duplicate_action": (
        ": the key 'work' is written twice in one mapping (lines 4 and 6): keep one"
    ),
    "duplicate_plan": ": the key 'basic' is written twice in one mapping (lines 6 and 9): keep one",
}


@pytest.mark.parametrize(("name", "tail"), sorted(EXPECTED.items()), ids=sorted(EXPECTED))
def test_bad_catalog_fails_with_exact_message(name: str, tail: str) -> None:
    """Each broken plans file is refused at load with a message naming the file and the fault."""
    path = BAD / f"{name}.yaml"
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"plans file {path}{tail}"


def test_not_yaml_names_the_file_and_the_position() -> None:
    """A file that does not parse says so, with the parser's line and column."""
    path = BAD / "not_yaml.yaml"
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    text = str(caught.value)
    assert text.startswith(f"plans file {path} is not valid YAML: while parsing a flow mapping")
    assert "line 2, column 9" in text


def test_missing_file_names_the_path_and_the_os_error() -> None:
    """A plans file that does not exist is a ConfigError, not a bare OSError."""
    path = BAD / "no_such_file.yaml"
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"cannot read plans file {path}: No such file or directory"


def test_every_bad_fixture_is_checked() -> None:
    """No fixture file sits in bad_catalogs/ without an expected message."""
    assert {p.stem for p in BAD.glob("*.yaml")} == {*EXPECTED, "not_yaml"}


def test_keys_a_merge_brings_in_may_be_overridden(tmp_path: Path) -> None:
    """Only keys written in the mapping itself count as repeated, not those of ``<<: *base``."""
    path = tmp_path / "plans.yaml"
    path.write_text(
        'meters: {credit: "credits"}\n'
        "actions:\n"
        "  work: &work {meter: credit, cost: 1}\n"
        "  more: {<<: *work, cost: 2}\n"
        "plans:\n"
        "  basic:\n"
        "    pools:\n"
        "      - {id: base, kind: allowance, meter: credit, amount: 100, period: month}\n"
    )
    catalog = load_catalog(path)
    assert catalog.plans["basic"].actions["more"].price({}) == Price("credit", 2 * M, 1)


def test_demo_catalog_loads_with_its_plans() -> None:
    """examples/demo.yaml compiles: every plan, pool order, and amounts in micro-units."""
    catalog = load_catalog(DEMO)
    assert set(catalog.plans) == {
        "glue_free",
        "glue_starter",
        "glue_pro",
        "zite_free",
        "zite_pro",
        "zite_pro_legacy",
        "zite_business",
        "zite_team",
        "shingle_free",
        "shingle_pro",
        "agent_free",
        "agent_team",
        "agent_scale",
    }
    team = catalog.plans["agent_team"]
    assert [p.id for p in team.pools] == ["daily", "bonus", "premium", "payg"]
    payg = team.by_id["payg"]
    assert (payg.code, payg.rates, payg.cap, payg.cap_min, payg.cap_max, payg.enabled) == (
        "P",
        {"agent_credit": 100_000},
        100 * M,
        100 * M,
        1000 * M,
        False,
    )
    assert (payg.period, payg.spend_unit, payg.balance_unit) == ("cycle", "usd", "usd")

    overage = catalog.plans["glue_starter"].by_id["overage"]
    assert (overage.block_size, overage.block_price, overage.cap) == (1000 * M, 20 * M, 100 * M)
    assert catalog.plans["glue_free"].by_id["base"].amount == 100 * M

    wallet = catalog.plans["shingle_free"].by_id["credits"]
    assert wallet.rates["llm_token"] == 20  # 0.00002 USD a token
    assert wallet.cap == -1  # no cap

    message = team.actions["agent.message"]
    assert message.price({"model": "ultra"}) == Price("agent_credit", 10 * M, 1)
    assert message.price({"model": "light"}) == Price("agent_credit", 1 * M, 1)
    assert team.attribute_keys == ("feature", "model")

    legacy = catalog.plans["zite_pro_legacy"]
    assert legacy.actions["zite.slack"].price({}) is None  # free for existing customers
    assert catalog.plans["zite_pro"].actions["zite.slack"].price({}) is not None
    assert catalog.plans["zite_free"].actions["zite.db"].price({}) is None
