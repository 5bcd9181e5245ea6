"""Per-account terms (issue 20 §6): seats, overrides and flags, and the plan they make.

An account's terms change how its plan prices and fills its pools without a plan per customer:

- ``seats``: an allowance marked ``per_seat`` gives its amount x seats (seed 004);
- ``allowances``: an allowance's amount (per seat for a ``per_seat`` pool);
- ``prices``: an action's base cost in its meter (variants still apply; 0 makes it free);
- ``rates``: a money pool's rate for a meter it already pays for;
- ``caps``: an overage or pay-as-you-go pool's cap range (cap_min..cap_max, -1: no maximum);
  the plan's default cap is moved into the range (no cap becomes the maximum);
- ``flags``: select the plan's ``flag_prices`` (the lowest of several wins); an account price
  wins over a flag's.

The terms are stored raw with the account (canonical JSON) and applied to the *current* plan
whenever the engine prices a call (``apply``), so a changed plans file applies to them at once.
Terms that name a pool or action the plan lacks (after a plan change) are kept and ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.money import MAX_AMOUNT
from creditgate.domain.plans_file import MAX_RATE
from creditgate.domain.wording import amount as worded

if TYPE_CHECKING:
    from creditgate.domain.catalog import Catalog, Plan, Pool

__all__ = ["MAX_FLAGS", "MAX_SEATS", "NO_TERMS", "Terms", "apply", "check", "known_flags"]

MAX_SEATS = 1_000_000
MAX_FLAGS = 16
_FLAG = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class Terms:
    """One account's terms; amounts in micro-units (see the module docstring)."""

    seats: int = 1
    allowances: dict[str, int] = field(default_factory=dict)
    prices: dict[str, int] = field(default_factory=dict)
    rates: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> meter -> rate
    caps: dict[str, tuple[int, int]] = field(default_factory=dict)  # pool -> (min, max)
    flags: tuple[str, ...] = ()  # sorted, unique

    def encode(self) -> str:
        """Canonical JSON ('' for the default terms): what the account stores."""
        if self == NO_TERMS:
            return ""
        doc: dict[str, Any] = {"seats": self.seats}
        for name in ("allowances", "prices", "rates", "caps"):
            value = getattr(self, name)
            if value:
                doc[name] = {k: list(v) if name == "caps" else v for k, v in value.items()}
        if self.flags:
            doc["flags"] = list(self.flags)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Terms:
        if not text:
            return NO_TERMS
        doc = json.loads(text)
        return cls(
            seats=doc.get("seats", 1),
            allowances=doc.get("allowances", {}),
            prices=doc.get("prices", {}),
            rates=doc.get("rates", {}),
            caps={k: (v[0], v[1]) for k, v in doc.get("caps", {}).items()},
            flags=tuple(doc.get("flags", ())),
        )

    def key(self) -> str:
        """A short fingerprint of ``encode()`` ('' for the default terms)."""
        text = self.encode()
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest() if text else ""


NO_TERMS = Terms()


def known_flags(catalog: Catalog) -> frozenset[str]:
    return frozenset(f for plan in catalog.plans.values() for f in plan.flag_prices)


def _refuse(msg: str) -> NoReturn:
    raise InvalidArgumentError(msg)


def _pool_of(plan: Plan, pool_id: str, kinds: tuple[str, ...], what: str) -> Pool:
    pool = plan.pool(pool_id)
    if pool is None or pool.kind not in kinds:
        names = ", ".join(p.id for p in plan.pools if p.kind in kinds) or "none"
        msg = (
            f"terms {what}: plan {plan.id} has no {' or '.join(kinds)} pool {pool_id!r} "
            f"(its {' or '.join(kinds)} pools: {names})"
        )
        raise InvalidArgumentError(msg)
    return pool


def check(terms: Terms, catalog: Catalog, plan: Plan) -> Terms:
    """INVALID_ARGUMENT naming the first problem of ``terms`` for an account on ``plan``."""
    if not 1 <= terms.seats <= MAX_SEATS:
        _refuse(f"terms seats must be 1-{MAX_SEATS}, got {terms.seats}")
    _check_allowances(terms, plan)
    _check_prices(terms, plan)
    for pool_id, rates in terms.rates.items():
        pool = _pool_of(plan, pool_id, ("balance", "payg"), "rates")
        for meter, rate in rates.items():
            if meter not in pool.rates:
                _refuse(
                    f"terms rates {pool_id}: the pool has no rate for meter {meter!r} "
                    f"(it has: {', '.join(sorted(pool.rates))})"
                )
            if not 0 < rate <= MAX_RATE:
                _refuse(f"terms rates {pool_id} {meter}: rate must be 1-{MAX_RATE}, got {rate}")
    for pool_id, (low, high) in terms.caps.items():
        unit = _pool_of(plan, pool_id, ("overage", "payg"), "caps").unit
        for name, value in (("cap_min", low), ("cap_max", high)):
            if value > MAX_AMOUNT:
                _refuse(
                    f"terms caps {pool_id}: {name} {value} micro-units is above the largest "
                    f"supported amount, {worded(MAX_AMOUNT, unit)}"
                )
        if low < 0 or not (high == -1 or low <= high):
            _refuse(
                f"terms caps {pool_id}: need 0 <= cap_min <= cap_max (-1: no maximum), "
                f"got {worded(low, unit)}..{worded(high, unit)} (micro-units: $1 = 1,000,000)"
            )
    _check_flags(terms.flags, catalog)
    return terms


def _check_allowances(terms: Terms, plan: Plan) -> None:
    for pool_id, amount in terms.allowances.items():
        pool = _pool_of(plan, pool_id, ("allowance",), "allowances")
        seats = terms.seats if pool.per_seat else 1
        if not 0 <= amount * seats <= MAX_AMOUNT:
            _refuse(
                f"terms allowances {pool_id}: {worded(amount, pool.meter or '')} x {seats} "
                "seats is outside 0..2^52 micro-units"
            )
    for pool in plan.pools:
        amount = terms.allowances.get(pool.id, pool.amount)
        if pool.per_seat and amount * terms.seats > MAX_AMOUNT:
            _refuse(f"terms seats: {terms.seats} seats x pool {pool.id}'s amount is beyond 2^52")


def _check_prices(terms: Terms, plan: Plan) -> None:
    for action, cost in terms.prices.items():
        price = plan.actions.get(action)
        if price is None:
            _refuse(f"terms prices: unknown action {action!r}")
        elif price.meter is None:
            _refuse(
                f"terms prices {action}: the action is free on plan {plan.id}; only a "
                "priced action takes a price"
            )
        if not 0 <= cost <= MAX_AMOUNT:
            _refuse(f"terms prices {action}: cost {cost} is outside 0..2^52 micro-units")


def _check_flags(flags: tuple[str, ...], catalog: Catalog) -> None:
    if len(flags) > MAX_FLAGS:
        _refuse(f"terms flags: at most {MAX_FLAGS}, got {len(flags)}")
    known = known_flags(catalog)
    for flag in flags:
        if not _FLAG.fullmatch(flag):
            _refuse(f"terms flags: {flag!r} is not a flag name (a-z, 0-9, _; 1-32 characters)")
        if flag not in known:
            _refuse(f"terms flags: no plan's flag_prices names {flag!r} (known: "
                    f"{', '.join(sorted(known)) or 'none'})")  # fmt: skip
    if list(flags) != sorted(set(flags)):
        _refuse("terms flags: list each flag once")


def apply(plan: Plan, terms: Terms) -> Plan:
    """``plan`` as ``terms`` make it for one account (the plan itself for the default terms)."""
    if terms == NO_TERMS:
        return plan
    pools = tuple(_pool(p, terms) for p in plan.pools)
    actions = dict(plan.actions)
    for name, price in plan.actions.items():
        flagged = [
            plan.flag_prices[f][name] for f in terms.flags if name in plan.flag_prices.get(f, {})
        ]
        cost = terms.prices.get(name, min(flagged) if flagged else None)
        if cost is not None and price.meter is not None:
            actions[name] = price.at(cost)
    return replace(
        plan,
        pools=pools,
        actions=actions,
        by_id={p.id: p for p in pools},
        terms=terms,
        terms_key=terms.key(),
    )


def _pool(pool: Pool, terms: Terms) -> Pool:
    if pool.kind == "allowance":
        amount = terms.allowances.get(pool.id, pool.amount)
        if pool.per_seat:
            amount *= terms.seats
        return replace(pool, amount=min(amount, MAX_AMOUNT))
    rates = terms.rates.get(pool.id)
    if rates and pool.is_money:
        pool = replace(pool, rates={m: rates.get(m, r) for m, r in pool.rates.items()})
    span = terms.caps.get(pool.id)
    if span is not None and pool.kind in ("overage", "payg"):
        low, high = span
        cap = high if pool.cap < 0 else max(pool.cap, low)
        if high >= 0:
            cap = min(cap, high)
        pool = replace(pool, cap=cap, cap_min=low, cap_max=high)
    return pool
