"""What the engine answers, as plain frozen values (the transport turns them into protobuf).

All amounts are integer micro-units of the unit named beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from creditgate.domain.terms import NO_TERMS, Terms


class Reason(IntEnum):
    """Mirrors creditgate.v1.Reason."""

    UNSPECIFIED = 0
    ALLOWED = 1
    INSUFFICIENT_CREDITS = 2
    SPEND_CAP_REACHED = 3
    ACCOUNT_SUSPENDED = 4
    ACCOUNT_STOPPED = 5
    NOT_ENTITLED = 6
    UNKNOWN_ACTION = 7


@dataclass(frozen=True, slots=True)
class Movement:
    """One pool's part of a charge (positive amount) or of a return (negative amount)."""

    pool_id: str
    amount: int
    unit: str
    remaining: int
    covered: int


def net_by_pool(rows: tuple[Movement, ...]) -> tuple[Movement, ...]:
    """One movement per pool, in first-seen order, with the last row's balance.

    A settled hold and its extra charge on the same pool are reported as one debit.
    """
    merged: dict[str, Movement] = {}
    for m in rows:
        prev = merged.get(m.pool_id)
        merged[m.pool_id] = (
            m
            if prev is None
            else Movement(
                m.pool_id, prev.amount + m.amount, m.unit, m.remaining, prev.covered + m.covered
            )
        )
    return tuple(merged.values())


@dataclass(frozen=True, slots=True)
class Remaining:
    pool_id: str
    remaining: int
    unit: str


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    cost: int
    meter: str
    debits: tuple[Movement, ...]
    balances: tuple[Remaining, ...]
    request_id: str
    retry_at: int = 0
    replayed: bool = False
    shortfall: int = 0
    expires_at: int = 0
    now: int = 0
    dry_run: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: str
    cost: int
    meter: str
    held: int
    fully_charged: bool
    shortfall: int
    reason: Reason
    debits: tuple[Movement, ...]
    balances: tuple[Remaining, ...]
    replayed: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    reservation_id: str
    released: bool
    returned: int
    returns: tuple[Movement, ...]
    balances: tuple[Remaining, ...]
    state: str


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    refunded: int
    meter: str
    refundable: int
    returns: tuple[Movement, ...]
    balances: tuple[Remaining, ...]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: str
    balance: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class PoolState:
    pool_id: str
    kind: str
    unit: str
    meter: str
    balance: int
    period: str
    next_reset: int
    spent: int
    cap: int
    spend_unit: str
    enabled: bool
    lots: tuple[Lot, ...]


@dataclass(frozen=True, slots=True)
class RecurringState:
    """One recurring charge of the account's plan (domain/recurring.py) and where it stands."""

    recurring_id: str
    action: str
    cost: int  # each period, in micro-units of ``meter``, as the account's terms price it
    meter: str
    next_due: int  # unix ms; when unpaid, the start of the period it is still due for
    unpaid: bool  # on_short stop and not paid: the account is stopped until it is


@dataclass(frozen=True, slots=True)
class AccountState:
    account_id: str
    plan_id: str
    status: str
    anchor_day: int
    stopped_until: int
    created: int
    test_clock: int
    now: int
    pools: tuple[PoolState, ...]
    terms: Terms = NO_TERMS  # the account's seats, overrides and flags (domain/terms.py)
    recurring: tuple[RecurringState, ...] = ()


@dataclass(frozen=True, slots=True)
class GrantResult:
    grant_id: str
    balance: int
    unit: str
    replayed: bool
