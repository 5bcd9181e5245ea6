"""The plan catalog: meters, the price book and plans with their pools, loaded from YAML.

A *meter* is what an action is counted in (``ai_credit``, ``integration_credit``, ``llm_token``).
Credits of one meter never pay for another. A *pool* holds credits of one meter (allowance,
grant, overage) or money (balance, payg) that pays for any meter it has a rate for.
Every amount in the file is a decimal in whole units; it is compiled to integer micro-units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import (
    ValidationError,
)

from creditgate.domain import strict_yaml
from creditgate.domain.errors import ConfigError
from creditgate.domain.gateway import NO_GATEWAY, Gateway, compile_gateway
from creditgate.domain.money import MAX_AMOUNT, MICRO, to_micro
from creditgate.domain.plans_file import (
    KIND_CODE,
    MAX_RATE,
    ActionConfig,
    Amount,
    CatalogConfig,
    PlanConfig,
    PoolConfig,
    PurchaseConfig,
)
from creditgate.domain.purchase import CENT, PurchaseLimits
from creditgate.domain.recurring import Recurring, compile_recurring

if TYPE_CHECKING:
    from creditgate.domain.terms import Terms


@dataclass(frozen=True, slots=True)
class Scope:
    actions: frozenset[str]
    attributes: tuple[tuple[str, frozenset[str]], ...]

    def accepts(self, action: str, attributes: dict[str, str]) -> bool:
        if self.actions and action not in self.actions:
            return False
        return all(attributes.get(key) in values for key, values in self.attributes)


@dataclass(frozen=True, slots=True)
class Pool:
    """A compiled pool. Amounts are micro-units; ``cap`` -1 means no cap."""

    id: str
    kind: str
    code: str
    meter: str | None
    unit: str
    amount: int
    period: str
    scope: Scope
    rates: dict[str, int]
    block_size: int
    block_price: int
    cap: int
    cap_min: int
    cap_max: int
    enabled: bool
    description: str = ""
    stops_account: bool = False
    low_balance: int = 0  # a balance pool's default low-balance threshold (0: none)
    per_seat: bool = False  # an allowance whose amount is per seat of the account

    @property
    def is_money(self) -> bool:
        return self.kind in ("balance", "payg")

    def rate_for(self, action: str, meter: str, attributes: dict[str, str]) -> int | None:
        """Money micro per meter unit (1 for credit pools) if this pool pays, else None."""
        if not self.scope.accepts(action, attributes):
            return None
        if self.is_money:
            return self.rates.get(meter)
        return 1 if self.meter == meter else None

    @property
    def spend_unit(self) -> str:
        return self.unit if self.kind in ("overage", "payg") else ""

    @property
    def balance_unit(self) -> str:
        return self.unit if self.is_money else (self.meter or "")


@dataclass(frozen=True, slots=True)
class Price:
    """Meter micro-units per ``per`` units of an action."""

    meter: str
    unit_cost: int
    per: int


@dataclass(frozen=True, slots=True)
class _Variant:
    when: tuple[tuple[str, frozenset[str]], ...]
    unit_cost: int


@dataclass(frozen=True, slots=True)
class ActionPrice:
    meter: str | None
    unit_cost: int
    per: int
    variants: tuple[_Variant, ...] = ()
    # Priced at 0 by a plan, a flag or an account's terms: free, its meter kept so that a flag
    # or the account's terms can price it again (seed 000's hosting for custom integrations).
    free: bool = False

    def price(self, attributes: dict[str, str]) -> Price | None:
        """None for a free action."""
        if self.meter is None or self.free:
            return None
        cost = self.unit_cost
        for variant in self.variants:
            if all(attributes.get(k) in v for k, v in variant.when):
                cost = variant.unit_cost
                break
        return Price(self.meter, cost, self.per)

    def at(self, cost: int) -> ActionPrice:
        """This action at another base ``cost`` (variants still apply); 0 makes it free."""
        return replace(self, unit_cost=cost, free=cost == 0)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    pools: tuple[Pool, ...]
    actions: dict[str, ActionPrice]
    # Attribute keys that any scope or price variant of this plan reads (for caching).
    attribute_keys: tuple[str, ...]
    description: str = ""
    by_id: dict[str, Pool] = field(default_factory=dict)
    # Each pool's id and the unit of its balance, in consumption order (answers list them so).
    layout: tuple[tuple[str, str], ...] = ()
    units: dict[str, str] = field(default_factory=dict)
    purchase: PurchaseLimits | None = None  # None: the plan sells no credits
    # Action costs that an account flag selects: flag -> action -> meter micro-units.
    flag_prices: dict[str, dict[str, int]] = field(default_factory=dict)
    # Set on the plan as one account's terms make it (domain.terms.apply): the terms and
    # their fingerprint, which the scripts check along with the plan id.
    terms: Terms | None = None
    terms_key: str = ""
    recurring: tuple[Recurring, ...] = ()  # charges at each period's start

    @property
    def key(self) -> str:
        """What the scripts compare with the account's plan: its id, with its terms' key."""
        return f"{self.id}#{self.terms_key}" if self.terms_key else self.id

    def pool(self, pool_id: str) -> Pool | None:
        return self.by_id.get(pool_id)


@dataclass(frozen=True, slots=True)
class Catalog:
    plans: dict[str, Plan]
    meters: dict[str, str]
    actions: frozenset[str] = frozenset()
    gateway: Gateway = NO_GATEWAY
    fail_open: frozenset[str] = frozenset()  # actions with on_unavailable: allow

    def plan(self, plan_id: str) -> Plan | None:
        return self.plans.get(plan_id)


def _micro(value: Amount | None, what: str, default: int = 0) -> int:
    """An amount of the plans file in micro-units; every amount there is 0 or more.

    A negative amount would credit the caller (an allowance of -100 shows -100 credits, a
    negative price pays for using an action): refused here, once for every field.
    """
    if value is None:
        return default
    if isinstance(value, float):
        msg = f"{what}: write {value!r} as a string (floats are not exact)"
        raise ConfigError(msg)
    try:
        micro = to_micro(value, what=what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if micro < 0:
        msg = f"{what}: {value!r} is negative; amounts, prices and caps are 0 or more"
        raise ConfigError(msg)
    return micro


def _compile_pool(cfg: PoolConfig, meters: set[str], where: str) -> Pool:
    w = f"{where} pool {cfg.id}"
    if cfg.meter is not None and cfg.meter not in meters:
        msg = f"{w}: unknown meter {cfg.meter!r} (declare it under meters)"
        raise ConfigError(msg)
    rates = {}
    for meter, rate in cfg.rates.items():
        if meter not in meters:
            msg = f"{w}: rate for unknown meter {meter!r}"
            raise ConfigError(msg)
        rates[meter] = _micro(rate, f"{w} rate {meter}")
        if not 0 < rates[meter] <= MAX_RATE:
            msg = f"{w}: rate {meter} must be above 0 and at most 1000 per unit"
            raise ConfigError(msg)
    block_size = _micro(cfg.block_size, f"{w} block_size")
    if cfg.kind == "overage" and block_size < MICRO:
        msg = f"{w}: block_size must be at least 1"
        raise ConfigError(msg)
    if cfg.kind == "overage" and _micro(cfg.block_price, f"{w} block_price") <= 0:
        msg = f"{w}: block_price must be above 0"
        raise ConfigError(msg)
    _check_caps(cfg, w)
    return Pool(
        id=cfg.id,
        kind=cfg.kind,
        code=KIND_CODE[cfg.kind],
        meter=cfg.meter,
        unit=cfg.unit,
        amount=_micro(cfg.amount, f"{w} amount"),
        period=cfg.period or ("cycle" if cfg.kind in ("overage", "payg") else ""),
        scope=Scope(
            frozenset(cfg.scope.actions),
            tuple((k, frozenset(v)) for k, v in sorted(cfg.scope.attributes.items())),
        ),
        rates=rates,
        block_size=block_size,
        block_price=_micro(cfg.block_price, f"{w} block_price"),
        cap=_micro(cfg.cap, f"{w} cap", -1),
        cap_min=_micro(cfg.cap_min, f"{w} cap_min", 0),
        cap_max=_micro(cfg.cap_max, f"{w} cap_max", -1),
        enabled=cfg.enabled,
        description=cfg.description,
        stops_account=(
            cfg.on_cap_below_spend or ("stop_account" if cfg.kind == "overage" else "block_pool")
        )
        == "stop_account",
        low_balance=_micro(cfg.low_balance, f"{w} low_balance"),
        per_seat=cfg.per_seat,
    )


def _check_caps(cfg: PoolConfig, where: str) -> None:
    """The default cap lies within the range an account may set (cap_min..cap_max)."""
    low = _micro(cfg.cap_min, f"{where} cap_min", 0)
    high = _micro(cfg.cap_max, f"{where} cap_max", -1)
    cap = _micro(cfg.cap, f"{where} cap", -1)
    if high >= 0 and low > high:
        msg = f"{where}: cap_min ({cfg.cap_min}) is above cap_max ({cfg.cap_max})"
        raise ConfigError(msg)
    if cap >= 0 and (cap < low or (high >= 0 and cap > high)):
        msg = f"{where}: cap ({cfg.cap}) is outside cap_min..cap_max"
        raise ConfigError(msg)


def _compile_purchase(cfg: PurchaseConfig, pools: dict[str, Pool], where: str) -> PurchaseLimits:
    """Limits within one balance pool: 0 < min <= default <= max, each in whole cents."""
    w = f"{where} purchase"
    balances = [p.id for p in pools.values() if p.kind == "balance"]
    pool_id = cfg.pool or (balances[0] if len(balances) == 1 else "")
    if pool_id not in balances:
        msg = (
            f"{w}: pool must name one of the plan's balance pools ({', '.join(balances) or 'none'})"
            if cfg.pool or len(balances) > 1
            else f"{w}: the plan has no balance pool for purchased money to land in"
        )
        raise ConfigError(msg)
    low, high = _micro(cfg.min, f"{w} min"), _micro(cfg.max, f"{w} max")
    default = _micro(cfg.default, f"{w} default")
    if not 0 < low <= default <= high:
        msg = f"{w}: need 0 < min ({cfg.min}) <= default ({cfg.default}) <= max ({cfg.max})"
        raise ConfigError(msg)
    if any(x % CENT for x in (low, high, default)):
        msg = f"{w}: min, max and default must be whole cents"
        raise ConfigError(msg)
    return PurchaseLimits(pool_id, pools[pool_id].unit, low, high, default)


def _compile_action(
    name: str,
    cfg: ActionConfig,
    meters: set[str],
) -> ActionPrice:
    if cfg.free:
        return ActionPrice(None, 0, cfg.per)
    if cfg.meter is None or cfg.meter not in meters:
        msg = f"action {name}: needs a declared meter (or free: true)"
        raise ConfigError(msg)
    variants = tuple(
        _Variant(
            tuple((k, frozenset(v)) for k, v in sorted(var.when.items())),
            _micro(var.cost, f"action {name} variant cost"),
        )
        for var in cfg.variants
    )
    unit_cost = _micro(cfg.cost, f"action {name} cost")
    return ActionPrice(cfg.meter, unit_cost, cfg.per, variants)


def _compile_plan(plan_id: str, cfg: PlanConfig, catalog: CatalogConfig) -> Plan:
    meters = set(catalog.meters)
    pools = {p.id: _compile_pool(p, meters, f"plan {plan_id}") for p in cfg.pools}
    if len(pools) != len(cfg.pools):
        msg = f"plan {plan_id}: pool ids must be unique"
        raise ConfigError(msg)
    order = cfg.order or tuple(pools)
    if sorted(order) != sorted(pools):
        msg = f"plan {plan_id}: order must name every pool exactly once: {sorted(pools)}"
        raise ConfigError(msg)
    actions = {}
    for name, action in catalog.actions.items():
        compiled = _compile_action(name, action, meters)
        override = cfg.prices.get(name)
        actions[name] = compiled if override is None else compiled.at(_micro(override, "price"))
    for name in cfg.prices:
        if name not in catalog.actions:
            msg = f"plan {plan_id}: price override for unknown action {name!r}"
            raise ConfigError(msg)
    flag_prices = {
        flag: {a: _micro(c, f"plan {plan_id} flag_prices {flag} {a}") for a, c in costs.items()}
        for flag, costs in cfg.flag_prices.items()
    }
    for flag, costs in flag_prices.items():
        for name in costs:
            if name not in catalog.actions:
                msg = f"plan {plan_id}: flag_prices {flag} names unknown action {name!r}"
                raise ConfigError(msg)
    keys = {k for p in pools.values() for k, _ in p.scope.attributes}
    keys |= {k for a in actions.values() for v in a.variants for k, _ in v.when}
    ordered = tuple(pools[i] for i in order)
    layout = tuple((p.id, p.balance_unit) for p in ordered)
    purchase = (
        None if cfg.purchase is None else _compile_purchase(cfg.purchase, pools, f"plan {plan_id}")
    )
    return Plan(
        plan_id,
        ordered,
        actions,
        tuple(sorted(keys)),
        cfg.description,
        {p.id: p for p in ordered},
        layout,
        dict(layout),
        purchase,
        flag_prices,
        recurring=compile_recurring(cfg.recurring, catalog.actions, actions, ordered, plan_id),
    )


def compile_catalog(config: CatalogConfig) -> Catalog:
    """Check cross-references and compile every amount to micro-units."""
    plans = {pid: _compile_plan(pid, cfg, config) for pid, cfg in config.plans.items()}
    for plan in plans.values():
        for pool in plan.pools:
            if max(pool.amount, pool.cap, pool.block_price) > MAX_AMOUNT:
                msg = f"plan {plan.id} pool {pool.id}: amount too large"
                raise ConfigError(msg)
    actions = frozenset(config.actions)
    fail_open = frozenset(n for n, a in config.actions.items() if a.on_unavailable == "allow")
    gateway = compile_gateway(config.gateway, actions)
    return Catalog(plans, dict(config.meters), actions, gateway, fail_open)


def load_catalog(path: str | Path) -> Catalog:
    """Read and compile a plans file; ConfigError names the file and what is wrong."""
    try:
        raw = strict_yaml.load(Path(path).read_text(encoding="utf-8"))
        return compile_catalog(CatalogConfig.model_validate(raw))
    except OSError as exc:
        msg = f"cannot read plans file {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"plans file {path} is not valid YAML: {exc}"
        raise ConfigError(msg) from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        msg = f"plans file {path} is invalid:\n" + "\n".join(lines)
        raise ConfigError(msg) from None
    except ConfigError as exc:
        msg = f"plans file {path}: {exc}"
        raise ConfigError(msg) from None


# Used with fullmatch: "$" alone would also accept a trailing newline.
ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
REQUEST_ID = ACCOUNT_ID
