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
    "RECORD_PREFIX",
    "AutoTopUp",
    "AutoTopUpView",
    "TopUpState",
    "grant_id",
    "idempotency_key",
    "merge_settings",
    "parse_settings",
    "parse_state",
    "settings_field",
    "state_field",
]

MIN_TOPUP = 5_000_000  # $5 (seed 003's dialog)
MAX_TOPUP = 100_000_000_000  # $100,000
Phase = Literal["idle", "in_flight", "failed", "monthly_max"]


RECORD_PREFIX = "auto:"  # a top-up's purchases row: auto:<top-up id>; purchase ids may not use it


def grant_id(topup_id: str) -> str:
    """The grant that credits a paid top-up (the credits view files it as an auto top-up)."""
    return f"topup:{topup_id}"


def idempotency_key(topup_id: str) -> str:
    """The provider's idempotency key of a top-up."""
    return f"topup:{topup_id}"


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


@dataclass(frozen=True, slots=True)
class AutoTopUpView:
    """A balance pool's auto top-up as Redis has it now: settings, state and the balance."""

    account: str
    pool: str
    unit: str
    balance: int
    settings: AutoTopUp | None  # None: off
    state: TopUpState


def merge_settings(
    current: AutoTopUp | None,
    enabled: bool | None,  # noqa: FBT001 - None keeps it, like the others
    threshold: int | None,
    amount: int | None,
    monthly_max: int | None,
) -> AutoTopUp | None:
    """The settings after a change where None keeps a value (``monthly_max`` -1: none).

    Turning off forgets the settings; turning on needs a threshold and an amount, given now or
    kept from before.
    """
    for name, value in (("threshold", threshold), ("amount", amount)):
        if value is not None and value < 0:
            msg = f"auto top-up {name} is micro-units, 0 or more; got {value}"
            raise InvalidArgumentError(msg)
    on = enabled if enabled is not None else current is not None
    if not on:
        if enabled is None and (threshold, amount, monthly_max) != (None, None, None):
            msg = "auto top-up is off: set enabled=true with the threshold and amount"
            raise InvalidArgumentError(msg)
        return None
    base = current or AutoTopUp(-1, -1)
    new = AutoTopUp(
        base.threshold if threshold is None else threshold,
        base.amount if amount is None else amount,
        base.monthly_max if monthly_max is None else (None if monthly_max == -1 else monthly_max),
    )
    if new.threshold < 0 or new.amount < 0:
        missing = [n for n, v in (("threshold", new.threshold), ("amount", new.amount)) if v < 0]
        msg = f"turning auto top-up on needs {' and '.join(missing)}"
        raise InvalidArgumentError(msg)
    if monthly_max is not None and monthly_max < -1:
        msg = f"monthly_max is micro-units, or -1 for none; got {monthly_max}"
        raise InvalidArgumentError(msg)
    return new
