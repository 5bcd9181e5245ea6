"""The plans file as written: the YAML's schema (pydantic models), checked field by field.

``catalog.compile_catalog`` turns a checked ``CatalogConfig`` into the compiled catalog the
engine uses; every amount here is still a decimal in whole units.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from creditgate.domain.gateway import GatewayConfig  # noqa: TC001 - pydantic reads it at runtime
from creditgate.domain.wording import a_or_an

PoolKind = Literal["allowance", "grant", "balance", "overage", "payg"]
KIND_CODE: dict[str, str] = {
    "allowance": "A",
    "grant": "G",
    "balance": "B",
    "overage": "O",
    "payg": "P",
}
MAX_RATE = 1_000_000_000  # money micro-units per meter unit: keeps Lua products below 2**52
Ident = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ActionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]


def _exact(value: object) -> object:
    """Refuse floats and booleans where an amount belongs: YAML's 0.1 is not exact."""
    if isinstance(value, bool):
        msg = f"{value!r} is not an amount"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns ValueError into a field error
    if isinstance(value, float):
        msg = f'write {value!r} as a string ("{value}"): floats are not exact'
        raise ValueError(msg)  # noqa: TRY004
    return value


# A decimal in whole units, written as an integer or a string.
Amount = Annotated[str | int, BeforeValidator(_exact)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScopeConfig(_Model):
    """Which actions a pool accepts. Empty means every action of its meter."""

    actions: tuple[ActionName, ...] = ()
    attributes: dict[str, tuple[str, ...]] = {}


class PoolConfig(_Model):
    id: Ident
    kind: PoolKind
    description: str = ""
    meter: Ident | None = None
    unit: Ident = "usd"
    amount: Amount | None = None
    period: Literal["day", "month", "cycle"] | None = None
    scope: ScopeConfig = ScopeConfig()
    rates: dict[Ident, Amount] = {}
    block_size: Amount = 1000
    block_price: Amount | None = None
    cap: Amount | None = None
    cap_min: Amount | None = None
    cap_max: Amount | None = None
    enabled: bool = True
    # A balance pool's default low-balance threshold (seeds 002/003: "a default threshold if
    # auto top-up is off"); the auto top-up threshold replaces it while auto top-up is on.
    low_balance: Amount | None = None
    # Lowering the cap below this period's spend: seed 000 stops every action until renewal,
    # seed 004 only stops pay-as-you-go. Default: stop_account for overage, block_pool for payg.
    on_cap_below_spend: Literal["stop_account", "block_pool"] | None = None
    # An allowance per seat: its amount is multiplied by the account's seats (seed 004).
    per_seat: bool = False

    @model_validator(mode="after")
    def _check_kind(self) -> PoolConfig:
        need_meter = self.kind in ("allowance", "grant", "overage")
        if need_meter and self.meter is None:
            msg = f"pool {self.id}: {a_or_an(self.kind)} pool needs a meter"
            raise ValueError(msg)
        if self.kind == "allowance" and (self.amount is None or self.period is None):
            msg = f"pool {self.id}: an allowance needs an amount and a period"
            raise ValueError(msg)
        if self.kind in ("balance", "payg") and not self.rates:
            msg = f"pool {self.id}: {a_or_an(self.kind)} pool needs rates (money per meter unit)"
            raise ValueError(msg)
        if self.per_seat and self.kind != "allowance":
            msg = f"pool {self.id}: per_seat is for allowance pools only"
            raise ValueError(msg)
        if self.low_balance is not None and self.kind != "balance":
            msg = f"pool {self.id}: low_balance is for balance pools only"
            raise ValueError(msg)
        if self.kind == "overage" and self.block_price is None:
            msg = f"pool {self.id}: an overage pool needs a block_price"
            raise ValueError(msg)
        return self


class VariantConfig(_Model):
    """A price that applies when the request's attributes match (first match wins)."""

    when: dict[str, tuple[str, ...]]
    cost: Amount


class ActionConfig(_Model):
    meter: Ident | None = None
    cost: Amount = 0
    per: int = Field(default=1, ge=1, le=1_000_000_000)
    free: bool = False
    variants: tuple[VariantConfig, ...] = ()
    description: str = ""
    # What a gateway or an SDK caller does when creditgate cannot reach Redis (docs/ENVOY.md):
    # deny (the default) or allow, unbilled, counted and logged.
    on_unavailable: Literal["deny", "allow"] = "deny"


class PurchaseConfig(_Model):
    """One-time purchase limits in the balance pool's unit (seed 003: $5 / $1,000 / $10)."""

    min: Amount
    max: Amount
    default: Amount
    pool: Ident | None = None  # the balance pool credited; default: the plan's only one


class RecurringConfig(_Model):
    """A charge debited at the start of each period (domain/recurring.py)."""

    id: Ident
    action: ActionName
    quantity: int = Field(default=1, ge=1, le=1_000_000_000)
    period: Literal["day", "month", "cycle"] = "cycle"
    attributes: dict[str, str] = {}
    # When the pools cannot pay it: stop the account until paid, or let the period go unpaid.
    on_short: Literal["stop", "skip"] = "stop"
    description: str = ""


class PlanConfig(_Model):
    description: str = ""
    pools: tuple[PoolConfig, ...] = ()
    order: tuple[Ident, ...] = ()
    prices: dict[ActionName, Amount] = {}
    # Prices an account flag selects (issue 20 §6): {existing_customer: {integration: 0}}.
    flag_prices: dict[Ident, dict[ActionName, Amount]] = {}
    purchase: PurchaseConfig | None = None
    recurring: tuple[RecurringConfig, ...] = ()


class CatalogConfig(_Model):
    meters: dict[Ident, str] = {}
    actions: dict[ActionName, ActionConfig]
    plans: dict[Ident, PlanConfig]
    gateway: GatewayConfig | None = None  # domain/gateway.py: how a gateway's question maps
