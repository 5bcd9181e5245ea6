"""Auto top-up (seeds 002/003, with seed 000's monthly maximum): its settings and its state.

Both live in the account hash, per balance pool, so that the charge script that takes the
balance to the threshold can start a top-up itself, atomically (engine/lua/charge.lua
``crossed()``): exactly one is in flight, however many charges cross at once.

- ``au:<pool>`` = ``threshold,amount,monthly max`` (-1: none); absent: auto top-up is off.
- ``tu:<pool>`` = the state (``TopUpState``); absent: idle.

Both are mirrored into the ledger like every account field, so readers of the ledger (the
credits view) parse them with ``parse_settings`` and ``parse_state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.purchase import CENT
from creditgate.domain.wording import money

__all__ = [
    "MAX_TOPUP",
    "MIN_TOPUP",
    "AutoTopUp",
    "TopUpState",
    "parse_settings",
    "parse_state",
    "settings_field",
    "state_field",
]

MIN_TOPUP = 5_000_000  # $5 (seed 003's dialog)
MAX_TOPUP = 100_000_000_000  # $100,000
Phase = Literal["idle", "in_flight", "failed", "monthly_max"]


def settings_field(pool: str) -> str:
    return f"au:{pool}"


def state_field(pool: str) -> str:
    return f"tu:{pool}"


@dataclass(frozen=True, slots=True)
class AutoTopUp:
    """Top up ``amount`` when a charge leaves the balance at or below ``threshold``."""

    threshold: int
    amount: int
    monthly_max: int | None = None  # the most auto top-ups may spend in a calendar month (UTC)

    def check(self, unit: str = "usd") -> AutoTopUp:
        """INVALID_ARGUMENT naming the limit a setting is outside of (seed 003's dialog)."""
        if not MIN_TOPUP <= self.amount <= MAX_TOPUP:
            msg = (
                f"auto top-up amount must be between {money(MIN_TOPUP, unit)} and "
                f"{money(MAX_TOPUP, unit)}, got {money(self.amount, unit)}"
            )
            raise InvalidArgumentError(msg)
        if self.amount % CENT or self.threshold % CENT:
            msg = "auto top-up amount and threshold are charged in whole cents ($1 = 1,000,000)"
            raise InvalidArgumentError(msg)
        if not 0 <= self.threshold <= self.amount:
            msg = (
                f"auto top-up threshold must be between {money(0, unit)} and the purchase "
                f"amount {money(self.amount, unit)}, got {money(self.threshold, unit)}"
            )
            raise InvalidArgumentError(msg)
        if self.monthly_max is not None and self.monthly_max < self.amount:
            msg = (
                f"the monthly maximum auto top-up spend ({money(self.monthly_max, unit)}) must "
                f"be at least one top-up ({money(self.amount, unit)}), or unset for none"
            )
            raise InvalidArgumentError(msg)
        return self

    def encode(self) -> str:
        cap = -1 if self.monthly_max is None else self.monthly_max
        return f"{self.threshold},{self.amount},{cap}"


def parse_settings(raw: bytes | str | None) -> AutoTopUp | None:
    """The ``au:<pool>`` field; None when auto top-up is off."""
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    threshold, amount, cap = (int(x) for x in text.split(","))
    return AutoTopUp(threshold, amount, None if cap < 0 else cap)


@dataclass(frozen=True, slots=True)
class TopUpState:
    """Where a balance pool's auto top-up is: idle, one in flight, or paused and why."""

    phase: Phase
    topup_id: str = ""  # in_flight, failed
    until_ms: int = 0  # monthly_max: paused until the next month starts

    @property
    def paused(self) -> bool:
        return self.phase in ("failed", "monthly_max")

    def describe(self) -> str:
        """Why, for the credits view and the CLI."""
        if self.phase == "in_flight":
            return f"top-up {self.topup_id} is being charged"
        if self.phase == "failed":
            return (
                f"paused: the payment of top-up {self.topup_id} failed; update the payment "
                "method and make a one-time purchase to resume"
            )
        if self.phase == "monthly_max":
            return "paused: this month's maximum auto top-up spend is reached"
        return "idle"


def parse_state(raw: bytes | str | None) -> TopUpState:
    """The ``tu:<pool>`` field (see account.lua's ``topup`` operation)."""
    if not raw:
        return TopUpState("idle")
    text = raw.decode() if isinstance(raw, bytes) else raw
    tag, _, rest = text.partition(":")
    if tag == "run":
        return TopUpState("in_flight", rest)
    if tag == "failed":
        return TopUpState("failed", rest)
    if tag == "max":
        return TopUpState("monthly_max", until_ms=int(rest))
    msg = f"unknown auto top-up state {text!r}"
    raise ValueError(msg)
