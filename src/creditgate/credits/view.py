"""What the credits view answers: plain values in integer micro-units of the unit beside them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from creditgate.domain.purchase import grant_id as purchase_grant_id
from creditgate.domain.recurring import REQUEST_PREFIX as RECURRING
from creditgate.domain.topup import grant_id as topup_grant_id
from creditgate.events.schema import USAGE_KINDS

if TYPE_CHECKING:
    from creditgate.domain.topup import AutoTopUpView

__all__ = [
    "CreditsView",
    "Lag",
    "Movement",
    "MovementPage",
    "PoolUsage",
    "UsageRow",
    "UsageView",
    "movement_type",
]

_PURCHASE = purchase_grant_id("")  # the grant id of a purchase: purchase:<purchase id>
_TOPUP = topup_grant_id("")  # the grant that pays an auto top-up: topup:<top-up id>
_OTHER_KINDS = {
    "reset": "reset",
    "expire": "expire",
    "overage_block": "overage_block",
    "billing_credit": "billing_credit",
}


def movement_type(kind: str, request_id: str) -> str:
    """What a movement was, as seed 003's card names it.

    purchase, auto_top_up, consumption (recurring for a plan's recurring charge), refund; or for
    the rest the event kind (grant, reset, expire, overage_block, billing_credit), adjustment
    otherwise.
    """
    if kind == "grant":
        if request_id.startswith(_PURCHASE):
            return "purchase"
        return "auto_top_up" if request_id.startswith(_TOPUP) else "grant"
    if kind == "refund":
        return "refund"
    if kind in USAGE_KINDS:
        return "recurring" if request_id.startswith(RECURRING) else "consumption"
    return _OTHER_KINDS.get(kind, "adjustment")


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the ledger may trail Redis (see docs/CREDITS.md)."""

    ledger_ms: int  # stream time of the newest event applied, any account (0: none)
    lag_ms: int  # 0 when caught up, else wall clock now - ledger_ms (an upper bound)
    account_ms: int  # stream time of this account's newest event in the ledger
    caught_up: bool  # the ledger holds the newest entry of the account's shard stream


@dataclass(frozen=True, slots=True)
class Movement:
    type: str
    pool: str
    unit: str
    amount: int  # signed
    balance: int  # the pool's balance right after
    time_ms: int  # the account's clock
    request_id: str
    action: str
    event_id: str


@dataclass(frozen=True, slots=True)
class MovementPage:
    items: tuple[Movement, ...]
    next_cursor: str  # '' : no more
    lag: Lag

    @property
    def has_more(self) -> bool:
        return bool(self.next_cursor)


@dataclass(frozen=True, slots=True)
class CreditsView:
    """Seed 003's Credits card."""

    account: str
    plan: str
    pool: str
    unit: str
    balance: int
    low_balance: bool
    threshold: int
    lifetime_added: int
    lifetime_spent: int
    auto_top_up: AutoTopUpView
    recent: tuple[Movement, ...]
    more_history: bool
    lag: Lag


@dataclass(frozen=True, slots=True)
class UsageRow:
    action: str
    meter: str
    pool: str
    unit: str
    amount: int  # net of refunds and released holds


@dataclass(frozen=True, slots=True)
class PoolUsage:
    pool: str
    kind: str
    unit: str
    used: int
    remaining: int


@dataclass(frozen=True, slots=True)
class UsageView:
    account: str
    plan: str
    since_ms: int
    until_ms: int
    actions: tuple[UsageRow, ...]
    pools: tuple[PoolUsage, ...]
    lag: Lag
