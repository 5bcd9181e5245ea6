"""How Envoy's external authorization ``Check`` becomes a charge: ``gateway.envoy_ext_authz``.

Envoy's external authorization filter asks ``Check`` with the request's method, path and
headers. ``gateway.envoy_ext_authz`` says which header (or JWT claim) names the account, which
the request id and the quantity, which headers become attributes, and which action each route
charges (the first route that matches; else ``default_action``). A route with ``hold`` reserves
an estimate under the request id instead of charging (the ``estimate_header``, else the
quantity header, else ``default_estimate``); the rate-limit filter applied on stream done
settles it (domain/gateway.py)::

    gateway:
      envoy_ext_authz:
        account_header: x-account-id      # the defaults; or account_claim (below), not both
        request_id_header: x-request-id
        quantity_header: x-creditgate-cost
        attribute_headers: {model: x-model}
        routes:
          - {methods: [POST], prefix: /v1/chat/, action: agent.message}
          - {prefix: /v1/llm/, action: llm.tokens,   # reserve; settled on stream done
             hold: {estimate_header: x-max-tokens, default_estimate: 4096}}
          - {regex: "/v1/runs/[0-9]+", action: glue.app_action}
        default_action: agent.message
        # account_claim: {namespace: envoy.filters.http.jwt_authn, path: [payload, sub]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from creditgate.domain.errors import ConfigError
from creditgate.domain.gateway_base import (
    Charge,
    EntryKey,
    MappingError,
    Model,
    Phase,
    check_names,
    check_section,
    whole_number,
)
from creditgate.domain.money import MAX_QUANTITY

if TYPE_CHECKING:
    from collections.abc import Mapping

# An HTTP header name (RFC 9110 token); Envoy sends them lower-case, and so are they compared.
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]
Method = Annotated[str, Field(pattern=r"^[A-Z]{1,16}$")]


class RouteHoldConfig(Model):
    """A route that reserves: where the estimate comes from, and how long the hold lives."""

    estimate_header: HeaderName | None = None
    default_estimate: int = Field(gt=0, le=MAX_QUANTITY)
    ttl_seconds: int = Field(default=0, ge=0, le=86_400)  # 0: CREDITGATE_HOLD_TTL_SECONDS's


class RouteConfig(Model):
    """A route: the methods (none: any) and one of prefix, path (exact) or regex (full match)."""

    action: str
    methods: tuple[Method, ...] = ()
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    hold: RouteHoldConfig | None = None


class ClaimConfig(Model):
    """Where in Envoy's metadata the account is: a filter's namespace, then keys down to it."""

    namespace: str = Field(min_length=1, max_length=128)
    path: tuple[EntryKey, ...] = Field(min_length=1)


class EnvoyExtAuthzConfig(Model):
    account_header: HeaderName | None = None  # x-account-id unless account_claim is given
    account_claim: ClaimConfig | None = None
    request_id_header: HeaderName = "x-request-id"
    quantity_header: HeaderName = "x-creditgate-cost"
    attribute_headers: dict[str, HeaderName] = Field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    default_action: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    action: str
    methods: frozenset[str]
    prefix: str | None
    path: str | None
    regex: re.Pattern[str] | None
    hold: RouteHoldConfig | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.path is not None:
            return path == self.path
        return self.regex is not None and self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class ExtAuthzMapping:
    """How one ``Check`` (method, path, headers, metadata) becomes one charge."""

    account_header: str | None
    claim: tuple[str, tuple[str, ...]] | None  # (namespace, keys)
    request_id_header: str
    quantity_header: str
    attribute_headers: dict[str, str]
    routes: tuple[Route, ...]
    default_action: str | None

    def route(self, method: str, path: str) -> tuple[str, RouteHoldConfig | None]:
        """The first matching route's action and hold (path without query), else the default."""
        bare = path.split("?", 1)[0].split("#", 1)[0]
        for route in self.routes:
            if route.matches(method, bare):
                return route.action, route.hold
        if self.default_action is None:
            msg = (
                f"no route of gateway.envoy_ext_authz matches {method} {bare} and there is no "
                "default_action; add a route for it"
            )
            raise MappingError(msg, "NO_ACTION")
        return self.default_action, None

    def account(self, headers: Mapping[str, str], metadata: Mapping[str, Any] | None) -> str:
        if self.claim is None:
            assert self.account_header is not None  # noqa: S101 - compile_ext_authz sets one
            found: object = headers.get(self.account_header, "")
            where = f"the header {self.account_header!r}"
        else:
            namespace, keys = self.claim
            found = metadata
            for key in keys:
                found = found.get(key) if isinstance(found, dict) else None
            where = f"the metadata {namespace}: {'.'.join(keys)}"
        if not isinstance(found, str) or not found:
            msg = f"no account: {where} is missing or not a string; the request names no account"
            raise MappingError(msg, "NO_ACCOUNT")
        return found

    def quantity(self, headers: Mapping[str, str]) -> int:
        given = headers.get(self.quantity_header)
        if given is None:
            return 1
        return whole_number(given, f"the header {self.quantity_header!r}")

    def charge(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        metadata: Mapping[str, Any] | None = None,
    ) -> Charge:
        """The charge of one HTTP request (header names lower-case, as Envoy sends them)."""
        try:
            return self._charge(method, path, headers, metadata)
        except MappingError as exc:
            exc.request_id = headers.get(self.request_id_header, "")
            raise

    def _charge(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        metadata: Mapping[str, Any] | None,
    ) -> Charge:
        account = self.account(headers, metadata)
        action, hold = self.route(method, path)
        rid = headers.get(self.request_id_header, "")
        attributes = {
            key: headers[name] for key, name in self.attribute_headers.items() if name in headers
        }
        if hold is None:
            quantity = self.quantity(headers)
            return Charge(0, account, action, quantity, attributes, rid, dry_run=False)
        if not rid:
            msg = (
                f"the route of {method} {path.split('?', 1)[0]} reserves, and a hold is found by "
                f"its request id when the stream is done: send the header "
                f"{self.request_id_header!r}"
            )
            raise MappingError(msg, "NO_REQUEST_ID")
        given = headers.get(hold.estimate_header) if hold.estimate_header else None
        estimate = (
            whole_number(given, f"the header {hold.estimate_header!r}")
            if given is not None
            else (
                self.quantity(headers) if self.quantity_header in headers else hold.default_estimate
            )
        )
        return Charge(
            0,
            account,
            action,
            estimate,
            attributes,
            rid,
            dry_run=False,
            phase=Phase.RESERVE,
            hold_ttl_seconds=hold.ttl_seconds,
        )


def _compile_route(where: str, cfg: RouteConfig, actions: frozenset[str]) -> Route:
    given = [k for k in ("prefix", "path", "regex") if getattr(cfg, k) is not None]
    if len(given) != 1:
        msg = (
            f"{where}: give exactly one of prefix, path or regex (got {', '.join(given) or 'none'})"
        )
        raise ConfigError(msg)
    if cfg.action not in actions:
        msg = f"{where}.action: unknown action {cfg.action!r} (not under actions)"
        raise ConfigError(msg)
    for key in ("prefix", "path"):
        value = getattr(cfg, key)
        if value is not None and not value.startswith("/"):
            msg = f"{where}.{key}: {value!r} must start with /"
            raise ConfigError(msg)
    pattern = None
    if cfg.regex is not None:
        try:
            pattern = re.compile(cfg.regex)
        except re.error as exc:
            msg = f"{where}.regex: {cfg.regex!r} is not a regular expression ({exc})"
            raise ConfigError(msg) from None
    hold = cfg.hold
    if hold is not None and hold.estimate_header is not None:
        hold = hold.model_copy(update={"estimate_header": hold.estimate_header.lower()})
    return Route(cfg.action, frozenset(cfg.methods), cfg.prefix, cfg.path, pattern, hold)


def compile_ext_authz(cfg: EnvoyExtAuthzConfig, actions: frozenset[str]) -> ExtAuthzMapping:
    where = "gateway.envoy_ext_authz"
    if cfg.account_header is not None and cfg.account_claim is not None:
        msg = f"{where}: give account_header or account_claim, not both"
        raise ConfigError(msg)
    account = None if cfg.account_claim else (cfg.account_header or "x-account-id").lower()
    named = [account, cfg.request_id_header.lower(), cfg.quantity_header.lower()]
    named += [h.lower() for h in cfg.attribute_headers.values()]
    check_names(where, [h for h in named if h is not None], "header", "header")
    check_section(where, "attribute_headers", cfg.attribute_headers, cfg.default_action, actions)
    if not cfg.routes and cfg.default_action is None:
        msg = f"{where}: no routes and no default_action; give at least one"
        raise ConfigError(msg)
    claim = cfg.account_claim
    return ExtAuthzMapping(
        account,
        (claim.namespace, claim.path) if claim else None,
        cfg.request_id_header.lower(),
        cfg.quantity_header.lower(),
        {k: h.lower() for k, h in cfg.attribute_headers.items()},
        tuple(_compile_route(f"{where}.routes[{i}]", r, actions) for i, r in enumerate(cfg.routes)),
        cfg.default_action,
    )
