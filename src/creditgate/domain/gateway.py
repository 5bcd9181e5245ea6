"""How a gateway's question becomes a charge: the ``gateway`` section of the plans file.

Envoy's HTTP rate-limit filter asks ``ShouldRateLimit`` with a domain and descriptors, each a list
of (key, value) entries built by the route's rate-limit actions (a request header, a generic key,
metadata). ``gateway.envoy_rate_limit`` says which domains this gate answers and, per domain,
which entry key names the account, which the action and which the request id, which entries
become attributes, and the action to charge when no entry names one::

    gateway:
      envoy_rate_limit:
        domains:
          creditgate:
            account_key: account        # the defaults
            action_key: action
            request_id_key: request_id
            attribute_keys: [model, feature]
            default_action: agent.message

The quantity is the descriptor's ``hits_addend`` when Envoy set one (0 is a dry run), else the
request's ``hits_addend`` when above 0, else 1 (docs/ENVOY.md says what Envoy 1.40 sends).

A domain with ``hold`` reserves on the request and settles when the stream is done (an LLM
call, whose cost is known only at its end): a descriptor whose ``phase`` entry is ``reserve``
holds the ``estimate`` entry (else ``hits_addend``, else ``default_estimate``) under the request
id; one whose ``phase`` is ``settle`` (the rate limit applied on stream done, its ``held`` entry
naming the hold this request made) charges that hold the ``usage`` entry, or, when none came
(a stream cut short), the estimate again (``without_usage: charge_estimate``) or nothing
(``release``). A descriptor without a phase
entry is a plain charge::

    hold: {default_estimate: 4096, ttl_seconds: 600}  # phase_key, estimate_key, usage_key

Envoy's external authorization filter: domain/ext_authz.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from creditgate.domain.ext_authz import EnvoyExtAuthzConfig, ExtAuthzMapping, compile_ext_authz
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

Domain = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]


class HoldConfig(Model):
    """Reserve on the request, settle on stream done: which entries say so, and the defaults."""

    phase_key: EntryKey = "phase"
    estimate_key: EntryKey = "estimate"
    usage_key: EntryKey = "usage"
    held_key: EntryKey = "held"
    default_estimate: int = Field(gt=0, le=MAX_QUANTITY)
    ttl_seconds: int = Field(default=0, ge=0, le=86_400)  # 0: CREDITGATE_HOLD_TTL_SECONDS's
    without_usage: Literal["charge_estimate", "release"] = "charge_estimate"


class DomainMappingConfig(Model):
    """One Envoy rate-limit domain: which descriptor entries say what."""

    account_key: EntryKey = "account"
    action_key: EntryKey = "action"
    request_id_key: EntryKey = "request_id"
    attribute_keys: tuple[EntryKey, ...] = ()
    default_action: str | None = None
    hold: HoldConfig | None = None


class EnvoyRateLimitConfig(Model):
    domains: dict[Domain, DomainMappingConfig] = Field(min_length=1)


class GatewayConfig(Model):
    envoy_rate_limit: EnvoyRateLimitConfig | None = None
    envoy_ext_authz: EnvoyExtAuthzConfig | None = None


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One of Envoy's descriptors: its entries in order, and its ``hits_addend`` if set."""

    entries: tuple[tuple[str, str], ...]
    hits_addend: int | None = None


@dataclass(frozen=True, slots=True)
class DomainMapping:
    domain: str
    account_key: str
    action_key: str
    request_id_key: str
    attribute_keys: frozenset[str]
    default_action: str | None
    hold: HoldConfig | None = None
    named: frozenset[str] = frozenset()  # the entry keys that say what the charge is

    def charge(self, descriptors: tuple[Descriptor, ...], hits_addend: int) -> Charge:
        """The one charge the descriptors ask for; MappingError says why there is none."""
        try:
            return self._charge(descriptors, hits_addend)
        except MappingError as exc:
            ids = (v for d in descriptors for k, v in d.entries if k == self.request_id_key)
            exc.request_id = next(ids, "")
            raise

    def _charge(self, descriptors: tuple[Descriptor, ...], hits_addend: int) -> Charge:
        named = [
            i for i, d in enumerate(descriptors) if any(k == self.account_key for k, _ in d.entries)
        ]
        if not named:
            msg = (
                f"domain {self.domain!r}: no descriptor has an entry {self.account_key!r} naming "
                "the account; add a rate-limit action that sets it (e.g. request_headers with "
                f"descriptor_key: {self.account_key})"
            )
            raise MappingError(msg, "NO_ACCOUNT")
        if len(named) > 1:
            msg = (
                f"domain {self.domain!r}: descriptors {', '.join(map(str, named))} each name an "
                "account; one request is one charge, so send one descriptor with "
                f"{self.account_key!r}"
            )
            raise MappingError(msg, "MANY_ACCOUNTS")
        index = named[0]
        found: dict[str, str] = {}
        attributes: dict[str, str] = {}
        for key, value in descriptors[index].entries:
            if key in found or key in attributes:
                msg = f"domain {self.domain!r}: descriptor {index} has the entry {key!r} twice"
                raise MappingError(msg, "DUPLICATE_ENTRY")
            if key in self.attribute_keys:
                attributes[key] = value
            elif key in self.named:
                found[key] = value
        action = found.get(self.action_key) or self.default_action
        if action is None:
            msg = (
                f"domain {self.domain!r}: descriptor {index} has no entry {self.action_key!r} "
                "and the domain has no default_action"
            )
            raise MappingError(msg, "NO_ACTION")
        own = descriptors[index].hits_addend
        if self.hold is not None and self.hold.phase_key in found:
            return self._held(index, found, attributes, action, own or hits_addend)
        quantity = own if own is not None else (hits_addend or 1)
        return Charge(
            index=index,
            account_id=found[self.account_key],
            action=action,
            quantity=quantity or 1,  # a dry run asks whether one unit would pass
            attributes=attributes,
            request_id=found.get(self.request_id_key, ""),
            dry_run=quantity == 0,
        )

    def _held(
        self,
        index: int,
        found: dict[str, str],
        attributes: dict[str, str],
        action: str,
        hits: int,
    ) -> Charge:
        """A reserve or a settle: the descriptor has a phase entry (``hold`` is configured)."""
        hold = self.hold
        assert hold is not None  # noqa: S101 - the caller checked
        where = f"domain {self.domain!r}: descriptor {index}"
        phase = found[hold.phase_key]
        if phase not in (Phase.RESERVE, Phase.SETTLE):
            msg = f"{where}: the entry {hold.phase_key!r} is {phase[:32]!r}; send reserve or settle"
            raise MappingError(msg, "UNKNOWN_PHASE")
        rid = found.get(self.request_id_key, "")
        if not rid:
            msg = (
                f"{where}: a hold is found by its request id when the stream is done, and the "
                f"entry {self.request_id_key!r} is missing; add a request_headers action for "
                "x-request-id"
            )
            raise MappingError(msg, "NO_REQUEST_ID")
        given = found.get(hold.estimate_key)
        estimate = (
            whole_number(given, f"{where}: the entry {hold.estimate_key!r}")
            if given is not None
            else hits or hold.default_estimate
        )
        used = found.get(hold.usage_key)
        if phase == Phase.SETTLE and found.get(hold.held_key) != rid:
            msg = (
                f"{where}: the entry {hold.held_key!r} does not name this request's hold, so this "
                "request did not make it (it was refused, or its id was used again); nothing "
                "is settled"
            )
            raise MappingError(msg, "NOT_HELD")
        bad = ""
        if phase == Phase.RESERVE:
            kind, quantity = Phase.RESERVE, estimate
        elif used is not None:
            # Usage that is not a count (the app's bug): the estimate is charged, never nothing
            # (the request ran), and envoy_common logs and counts it.
            counted = _count(used)
            kind = Phase.SETTLE
            quantity = estimate if counted is None else counted
            bad = used[:32] if counted is None else ""
        elif hold.without_usage == "release":
            kind, quantity = Phase.RELEASE, 0
        else:
            kind, quantity = Phase.SETTLE, estimate
        return Charge(
            index=index,
            account_id=found[self.account_key],
            action=action,
            quantity=quantity,
            attributes=attributes,
            request_id=rid,
            dry_run=False,
            phase=kind,
            hold_ttl_seconds=hold.ttl_seconds,
            bad_usage=bad,
        )


def _count(used: str) -> int | None:
    """A usage entry as a count of units (0 allowed), or None when it is not one."""
    try:
        return whole_number(used, "usage", zero=True)
    except MappingError:
        return None


@dataclass(frozen=True, slots=True)
class Gateway:
    """The compiled ``gateway`` section; empty when the plans file has none."""

    envoy_domains: dict[str, DomainMapping]
    ext_authz: ExtAuthzMapping | None = None

    def authz(self) -> ExtAuthzMapping:
        if self.ext_authz is None:
            msg = (
                "this gate has no external authorization mapping; add gateway.envoy_ext_authz "
                "to the plans file"
            )
            raise MappingError(msg, "NO_MAPPING")
        return self.ext_authz

    def mapping(self, domain: str) -> DomainMapping:
        found = self.envoy_domains.get(domain)
        if found is not None:
            return found
        if not self.envoy_domains:
            msg = (
                f"this gate answers no Envoy rate-limit domain (asked for {domain!r}); add "
                "gateway.envoy_rate_limit.domains to the plans file"
            )
        else:
            msg = (
                f"domain {domain!r} is not one this gate answers "
                f"({', '.join(sorted(self.envoy_domains))}); set the rate-limit filter's domain "
                "to one of them or add it under gateway.envoy_rate_limit.domains"
            )
        raise MappingError(msg, "UNKNOWN_DOMAIN")


NO_GATEWAY = Gateway({})


def _compile_domain(name: str, cfg: DomainMappingConfig, actions: frozenset[str]) -> DomainMapping:
    where = f"gateway.envoy_rate_limit.domains.{name}"
    named = [cfg.account_key, cfg.action_key, cfg.request_id_key, *cfg.attribute_keys]
    if cfg.hold is not None:
        hold = cfg.hold
        named += [hold.phase_key, hold.estimate_key, hold.usage_key, hold.held_key]
    check_names(where, named, "entry key", "key")
    check_section(where, "attribute_keys", cfg.attribute_keys, cfg.default_action, actions)
    return DomainMapping(
        name,
        cfg.account_key,
        cfg.action_key,
        cfg.request_id_key,
        frozenset(cfg.attribute_keys),
        cfg.default_action,
        cfg.hold,
        frozenset(named) - frozenset(cfg.attribute_keys),
    )


def compile_gateway(config: GatewayConfig | None, actions: frozenset[str]) -> Gateway:
    """Check the section against the price book; ConfigError names the field."""
    if config is None:
        return NO_GATEWAY
    domains = config.envoy_rate_limit.domains if config.envoy_rate_limit else {}
    authz = config.envoy_ext_authz
    return Gateway(
        {name: _compile_domain(name, cfg, actions) for name, cfg in domains.items()},
        compile_ext_authz(authz, actions) if authz is not None else None,
    )
