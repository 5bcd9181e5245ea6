"""Holds through a gateway, and the plans file's failure policy: the mapping alone.

A phase entry reserves or settles; an ext_authz route reserves. tests/transport and
tests/behind_envoy make the calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from creditgate.domain.catalog import load_catalog
from creditgate.domain.errors import ConfigError
from creditgate.domain.gateway import Descriptor, MappingError
from creditgate.domain.gateway_base import Phase

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.domain.catalog import Catalog

BASE = """
meters: {token: "tokens"}
actions:
  llm: {meter: token, cost: 1, on_unavailable: allow}
  work: {meter: token, cost: 1}
plans:
  basic:
    pools: [{id: base, kind: allowance, meter: token, amount: 10000, period: month}]
"""
HOLD = """
gateway:
  envoy_rate_limit:
    domains:
      llm:
        default_action: llm
        hold: {default_estimate: 500, ttl_seconds: 60, without_usage: WITHOUT}
  envoy_ext_authz:
    routes:
      - {prefix: /v1/llm/, action: llm,
         hold: {estimate_header: X-Max-Tokens, default_estimate: 300, ttl_seconds: 30}}
      - {prefix: /, action: work}
"""


def _catalog(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "plans.yaml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


@pytest.fixture(params=["charge_estimate", "release"])
def catalog(tmp_path: Path, request: pytest.FixtureRequest) -> Catalog:
    return _catalog(tmp_path, BASE + HOLD.replace("WITHOUT", request.param))


def _d(hits: int | None = None, **entries: str) -> Descriptor:
    return Descriptor(tuple(entries.items()), hits)


def test_reserve_holds_the_estimate_entry_else_hits_addend_else_the_default(
    catalog: Catalog,
) -> None:
    domain = catalog.gateway.mapping("llm")
    given = domain.charge((_d(account="a", request_id="r", phase="reserve", estimate="70"),), 9)
    hits = domain.charge((_d(account="a", request_id="r", phase="reserve"),), 9)
    default = domain.charge((_d(account="a", request_id="r", phase="reserve"),), 0)
    assert [c.quantity for c in (given, hits, default)] == [70, 9, 500]
    assert {(c.phase, c.hold_ttl_seconds, c.action) for c in (given, hits, default)} == {
        (Phase.RESERVE, 60, "llm")
    }


def test_settle_charges_the_usage_entry_even_zero(catalog: Catalog) -> None:
    domain = catalog.gateway.mapping("llm")
    used = domain.charge(
        (_d(account="a", request_id="r", phase="settle", usage="1234", held="r"),), 0
    )
    none = domain.charge((_d(account="a", request_id="r", phase="settle", usage="0", held="r"),), 0)
    assert [(c.phase, c.quantity) for c in (used, none)] == [
        (Phase.SETTLE, 1234),
        (Phase.SETTLE, 0),
    ]


@pytest.mark.parametrize("usage", ["lots", "-1", "1.5", "1e3", "9" * 20])
def test_a_usage_that_is_not_a_count_is_settled_at_the_estimate(
    catalog: Catalog, usage: str
) -> None:
    """The request ran: whatever ``without_usage`` says, it is never settled for nothing."""
    mine = {"account": "a", "request_id": "r", "phase": "settle", "held": "r"}
    charge = catalog.gateway.mapping("llm").charge((_d(**mine, estimate="80", usage=usage),), 0)
    assert (charge.phase, charge.quantity, charge.bad_usage) == (Phase.SETTLE, 80, usage[:32])


def test_a_stream_without_usage_is_settled_at_the_estimate_or_released(catalog: Catalog) -> None:
    domain = catalog.gateway.mapping("llm")
    assert domain.hold is not None
    cut = domain.charge(
        (_d(account="a", request_id="r", phase="settle", estimate="80", held="r"),), 0
    )
    if domain.hold.without_usage == "release":
        assert cut.phase is Phase.RELEASE
    else:
        assert (cut.phase, cut.quantity) == (Phase.SETTLE, 80)


def test_no_phase_entry_is_a_plain_charge(catalog: Catalog) -> None:
    charge = catalog.gateway.mapping("llm").charge((_d(account="a"),), 3)
    assert (charge.phase, charge.quantity) == (Phase.CHARGE, 3)


@pytest.mark.parametrize(
    ("entries", "reason", "words"),
    [
        ({"phase": "reserve"}, "NO_REQUEST_ID", "add a request_headers action for x-request-id"),
        ({"phase": "refund", "request_id": "r"}, "UNKNOWN_PHASE", "send reserve or settle"),
        (
            {"phase": "reserve", "request_id": "r", "estimate": "-5"},
            "INVALID_QUANTITY",
            "the entry 'estimate' is '-5'; send a whole number above 0",
        ),
        (
            {"phase": "settle", "request_id": "r", "usage": "5"},
            "NOT_HELD",
            "this request did not make it (it was refused, or its id was used again)",
        ),
        (
            {"phase": "settle", "request_id": "r", "usage": "5", "held": "other"},
            "NOT_HELD",
            "the entry 'held' does not name this request's hold",
        ),
    ],
    ids=["no-request-id", "unknown-phase", "bad-estimate", "no-held", "held-other"],
)
def test_a_hold_that_cannot_be_made_says_why(
    catalog: Catalog, entries: dict[str, str], reason: str, words: str
) -> None:
    with pytest.raises(MappingError) as caught:
        catalog.gateway.mapping("llm").charge((_d(account="a", **entries),), 0)
    assert caught.value.reason == reason
    assert words in str(caught.value)


def test_an_ext_authz_route_with_hold_reserves(catalog: Catalog) -> None:
    authz = catalog.gateway.authz()
    base = {"x-account-id": "a", "x-request-id": "r"}
    header = authz.charge("POST", "/v1/llm/chat", {**base, "x-max-tokens": "900"})
    cost = authz.charge("POST", "/v1/llm/chat", {**base, "x-creditgate-cost": "40"})
    default = authz.charge("POST", "/v1/llm/chat", base)
    plain = authz.charge("POST", "/v1/other", base)
    assert [(c.phase, c.quantity) for c in (header, cost, default, plain)] == [
        (Phase.RESERVE, 900),
        (Phase.RESERVE, 40),
        (Phase.RESERVE, 300),
        (Phase.CHARGE, 1),
    ]
    assert header.hold_ttl_seconds == 30
    with pytest.raises(MappingError) as caught:
        authz.charge("POST", "/v1/llm/chat", {"x-account-id": "a"})
    assert caught.value.reason == "NO_REQUEST_ID"


def test_on_unavailable_is_per_action_and_deny_by_default(catalog: Catalog) -> None:
    assert catalog.fail_open == frozenset({"llm"})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("default_estimate: 500", "default_estimate: 0"), "default_estimate: Input should be"),
        (("ttl_seconds: 60", "ttl_seconds: 90000"), "ttl_seconds: Input should be"),
        (("without_usage: WITHOUT", "without_usage: free"), "without_usage: Input should be"),
        (("hold: {default", "hold: {usage_key: request_id, default"), "two meanings"),
        (("cost: 1, on_unavailable: allow", "cost: 1, on_unavailable: maybe"), "on_unavailable"),
    ],
    ids=["estimate-0", "ttl-too-long", "unknown-without-usage", "key-twice", "bad-policy"],
)
def test_a_bad_hold_or_policy_is_refused_naming_the_field(
    tmp_path: Path, change: tuple[str, str], words: str
) -> None:
    text = (BASE + HOLD).replace(*change).replace("WITHOUT", "release")
    with pytest.raises(ConfigError) as caught:
        _catalog(tmp_path, text)
    assert words in str(caught.value)
