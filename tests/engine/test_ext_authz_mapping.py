"""gateway.envoy_ext_authz: bad configurations name the field; HTTP requests map to charges."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from creditgate.domain.catalog import load_catalog
from creditgate.domain.errors import ConfigError
from creditgate.domain.gateway import MappingError

if TYPE_CHECKING:
    from pathlib import Path

    from creditgate.domain.ext_authz import ExtAuthzMapping

BASE = """
meters: {credit: "credits"}
actions:
  work: {meter: credit, cost: 1}
  play: {meter: credit, cost: 2}
plans:
  basic:
    pools: [{id: base, kind: allowance, meter: credit, amount: 10, period: month}]
"""
WHERE = "gateway.envoy_ext_authz"


def _catalog(tmp_path: Path, authz: str) -> ExtAuthzMapping:
    path = tmp_path / "plans.yaml"
    path.write_text(f"{BASE}gateway:\n  envoy_ext_authz: {authz}\n", encoding="utf-8")
    return load_catalog(path).gateway.authz()


@pytest.mark.parametrize(
    ("authz", "tail"),
    [
        ("{default_action: nope}", f"{WHERE}.default_action: unknown action 'nope'"),
        ("{routes: [{prefix: /a, action: nope}]}", f"{WHERE}.routes[0].action: unknown action"),
        (
            "{default_action: work, routes: [{prefix: /a, path: /b, action: work}]}",
            f"{WHERE}.routes[0]: give exactly one of prefix, path or regex (got prefix, path)",
        ),
        ("{routes: [{action: work}]}", f"{WHERE}.routes[0]: give exactly one of"),
        ("{routes: [{prefix: a, action: work}]}", f"{WHERE}.routes[0].prefix: 'a' must start"),
        ("{routes: [{regex: '(', action: work}]}", f"{WHERE}.routes[0].regex: '(' is not a"),
        ("{}", f"{WHERE}: no routes and no default_action; give at least one"),
        (
            "{default_action: work, quantity_header: X-Account-Id}",
            f"{WHERE}: the header 'x-account-id' is given two meanings",
        ),
        (
            "{default_action: work, account_header: a, account_claim: {namespace: n, path: [s]}}",
            f"{WHERE}: give account_header or account_claim, not both",
        ),
        (
            "{default_action: work, attribute_headers: {'a b': x-a}}",
            f"{WHERE}.attribute_headers: 'a b' cannot be an attribute key",
        ),
        ("{default_action: work, account_header: 'x y'}", f"{WHERE}.account_header: String"),
        ("{routes: [{methods: [get], prefix: /, action: work}]}", f"{WHERE}.routes.0.methods.0"),
        ("{default_action: work, extra: 1}", f"{WHERE}.extra: Extra inputs are not permitted"),
    ],
    ids=[
        "unknown-default",
        "unknown-route-action",
        "two-matchers",
        "no-matcher",
        "relative-prefix",
        "bad-regex",
        "nothing-to-charge",
        "header-twice",
        "header-and-claim",
        "bad-attribute-key",
        "bad-header-name",
        "lower-case-method",
        "unknown-field",
    ],
)
def test_a_bad_ext_authz_section_names_the_field(tmp_path: Path, authz: str, tail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _catalog(tmp_path, authz)
    message = str(caught.value)
    assert tail in message
    assert len(message.splitlines()) <= 2  # the file, then the field


@pytest.fixture
def mapping(tmp_path: Path) -> ExtAuthzMapping:
    return _catalog(
        tmp_path,
        """
    account_header: X-User
    quantity_header: x-units
    attribute_headers: {model: x-model}
    routes:
      - {methods: [POST], prefix: /v1/play/, action: play}
      - {regex: "/v1/items/[0-9]+", action: play}
      - {prefix: /v1/, action: work}
    default_action: play
""",
    )


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("POST", "/v1/play/1", "play"),  # the first route
        ("GET", "/v1/play/1", "work"),  # not POST: the third route matches first
        ("GET", "/v1/items/12?x=/v1/", "play"),  # the query is not the path
        ("GET", "/v1/items/12/more", "work"),  # a regex matches the whole path
        ("GET", "/other", "play"),  # no route: the default
    ],
)
def test_the_first_route_that_matches_names_the_action(
    mapping: ExtAuthzMapping, method: str, path: str, action: str
) -> None:
    assert mapping.route(method, path)[0] == action


def test_headers_become_the_charge(mapping: ExtAuthzMapping) -> None:
    headers = {"x-user": "u1", "x-units": "4", "x-request-id": "r1", "x-model": "m", "x-o": "y"}
    charge = mapping.charge("GET", "/v1/a", headers)
    assert (charge.account_id, charge.action, charge.quantity, charge.request_id) == (
        "u1",
        "work",
        4,
        "r1",
    )
    assert charge.attributes == {"model": "m"}
    assert not charge.dry_run
    assert mapping.charge("GET", "/", {"x-user": "u1"}).quantity == 1  # no header: 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "NO_ACCOUNT"),
        ({"x-user": ""}, "NO_ACCOUNT"),
        ({"x-user": "u", "x-units": "0"}, "INVALID_QUANTITY"),  # never a free dry run
        ({"x-user": "u", "x-units": "-2"}, "INVALID_QUANTITY"),
        ({"x-user": "u", "x-units": "1.5"}, "INVALID_QUANTITY"),
    ],
)
def test_a_request_that_cannot_be_charged_says_why(
    mapping: ExtAuthzMapping, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(MappingError) as caught:
        mapping.charge("GET", "/", headers)
    assert caught.value.reason == reason


def test_no_route_and_no_default_is_no_action(tmp_path: Path) -> None:
    mapping = _catalog(tmp_path, "{routes: [{path: /a, action: work}]}")
    assert mapping.route("GET", "/a?q=1")[0] == "work"
    with pytest.raises(MappingError) as caught:
        mapping.route("GET", "/b")
    assert caught.value.reason == "NO_ACTION"
    assert "GET /b" in str(caught.value)


def test_the_account_from_a_jwt_claim_ignores_the_header(tmp_path: Path) -> None:
    mapping = _catalog(
        tmp_path,
        "{default_action: work, account_claim: {namespace: jwt, path: [payload, sub]}}",
    )
    claims = {"payload": {"sub": "u7", "iss": "x"}}
    charge = mapping.charge("GET", "/", {"x-account-id": "forged"}, claims)
    assert charge.account_id == "u7"
    for missing in (None, {}, {"payload": {"sub": 3}}, {"payload": "u7"}):
        with pytest.raises(MappingError) as caught:
            mapping.charge("GET", "/", {"x-account-id": "forged"}, missing)
        assert caught.value.reason == "NO_ACCOUNT"
        assert "jwt: payload.sub" in str(caught.value)


def test_a_plans_file_without_the_section_refuses_every_check(tmp_path: Path) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_catalog(path).gateway.authz()
    assert caught.value.reason == "NO_MAPPING"
    assert "add gateway.envoy_ext_authz" in str(caught.value)
