"""The plans file's gateway section: bad configurations name the field; requests map to charges."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from creditgate.domain.catalog import load_catalog
from creditgate.domain.errors import ConfigError
from creditgate.domain.gateway import Descriptor, MappingError

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.domain.gateway import DomainMapping

BASE = """
meters: {credit: "credits"}
actions:
  work: {meter: credit, cost: 1}
plans:
  basic:
    pools: [{id: base, kind: allowance, meter: credit, amount: 10, period: month}]
"""


def _load(tmp_path: Path, gateway: str) -> Path:
    path = tmp_path / "plans.yaml"
    path.write_text(BASE + gateway, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("gateway", "tail"),
    [
        (
            "gateway: {envoy_rate_limit: {domains: {api: {default_action: play}}}}",
            (
                ": gateway.envoy_rate_limit.domains.api.default_action: unknown action 'play' "
                "(not under actions)"
            ),
        ),
        (
            "gateway: {envoy_rate_limit: {domains: {api: {action_key: account}}}}",
            (
                ": gateway.envoy_rate_limit.domains.api: the entry key 'account' is given two "
                "meanings; each key names one thing"
            ),
        ),
        (
            "gateway: {envoy_rate_limit: {domains: {api: {attribute_keys: [a b]}}}}",
            (
                ": gateway.envoy_rate_limit.domains.api.attribute_keys: 'a b' cannot be an "
                "attribute key (1-64 letters, digits, _.:-)"
            ),
        ),
        (
            "gateway: {envoy_rate_limit: {domains: {api: {account: user}}}}",
            (
                " is invalid:\n  gateway.envoy_rate_limit.domains.api.account: Extra inputs are "
                "not permitted"
            ),
        ),
        (
            "gateway: {envoy_rate_limit: {domains: {}}}",
            (
                " is invalid:\n  gateway.envoy_rate_limit.domains: Dictionary should have at least "
                "1 item after validation, not 0"
            ),
        ),
    ],
    ids=["unknown-action", "key-twice", "bad-attribute-key", "unknown-field", "no-domain"],
)
def test_a_bad_gateway_section_names_the_field(tmp_path: Path, gateway: str, tail: str) -> None:
    path = _load(tmp_path, gateway)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"plans file {path}{tail}"


@pytest.fixture
def mapping(tmp_path: Path) -> DomainMapping:
    gateway = """
gateway:
  envoy_rate_limit:
    domains:
      api: {account_key: user, attribute_keys: [model], default_action: work}
"""
    return load_catalog(_load(tmp_path, gateway)).gateway.mapping("api")


def _d(hits: int | None = None, **entries: str) -> Descriptor:
    return Descriptor(tuple(entries.items()), hits)


def test_entries_become_the_charge(mapping: DomainMapping) -> None:
    charge = mapping.charge(
        (_d(gate="x"), _d(user="u1", action="other", request_id="r1", model="m", extra="y")), 4
    )
    assert (charge.index, charge.account_id, charge.action) == (1, "u1", "other")
    assert (charge.request_id, charge.attributes) == ("r1", {"model": "m"})
    assert (charge.quantity, charge.dry_run) == (4, False)


@pytest.mark.parametrize(
    ("own", "request_hits", "quantity", "dry_run"),
    [(None, 0, 1, False), (None, 3, 3, False), (2, 3, 2, False), (0, 3, 1, True)],
    ids=["unset-is-1", "request-level", "descriptor-wins", "zero-is-dry-run"],
)
def test_quantity_from_hits_addend(
    mapping: DomainMapping,
    own: int | None,
    request_hits: int,
    quantity: int,
    dry_run: bool,  # noqa: FBT001
) -> None:
    charge = mapping.charge((_d(own, user="u1"),), request_hits)
    assert (charge.quantity, charge.dry_run, charge.action) == (quantity, dry_run, "work")


@pytest.mark.parametrize(
    ("descriptors", "reason"),
    [
        ((_d(account="u1"),), "NO_ACCOUNT"),
        ((_d(user="u1"), _d(user="u2")), "MANY_ACCOUNTS"),
        ((Descriptor((("user", "u1"), ("user", "u2"))),), "DUPLICATE_ENTRY"),
    ],
    ids=["no-account-entry", "two-accounts", "entry-twice"],
)
def test_a_request_without_one_account_is_a_clear_refusal(
    mapping: DomainMapping,
    descriptors: tuple[Descriptor, ...],
    reason: str,
) -> None:
    with pytest.raises(MappingError) as caught:
        mapping.charge(descriptors, 0)
    assert caught.value.reason == reason
    assert "'api'" in str(caught.value)


def test_no_default_action_and_no_action_entry(tmp_path: Path) -> None:
    gateway = "gateway: {envoy_rate_limit: {domains: {api: {}}}}"
    mapping = load_catalog(_load(tmp_path, gateway)).gateway.mapping("api")
    with pytest.raises(MappingError) as caught:
        mapping.charge((_d(account="u1"),), 0)
    assert caught.value.reason == "NO_ACTION"
    assert str(caught.value) == (
        "domain 'api': descriptor 0 has no entry 'action' and the domain has no default_action"
    )


def test_unknown_domain_and_no_section(tmp_path: Path) -> None:
    gateway = "gateway: {envoy_rate_limit: {domains: {api: {}}}}"
    with pytest.raises(MappingError, match=r"domain 'web' is not one this gate answers \(api\)"):
        load_catalog(_load(tmp_path, gateway)).gateway.mapping("web")
    with pytest.raises(MappingError, match="answers no Envoy rate-limit domain"):
        load_catalog(_load(tmp_path, "")).gateway.mapping("web")
