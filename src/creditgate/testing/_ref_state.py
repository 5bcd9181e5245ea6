"""State of the reference model: what an account holds, and one operation's view of it.

The stored records mirror the fields the Lua engine keeps in Redis (the account hash, the holds
and the idempotency records); ``Op`` is one script call: the plan's pools, live, at the
account's frozen clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from creditgate.domain.results import (
    Decision,
    GrantResult,
    Movement,
    Refund,
    Remaining,
    Settlement,
)
from creditgate.domain.terms import NO_TERMS, Terms

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan, Pool

NEVER = 2**52 - 1  # sort key of a lot that never expires: after every dated lot


@dataclass
class LotRec:
    """Credits of one grant in a grant pool; ``expires_at`` 0 means never."""

    lot_id: str
    amount: int
    expires_at: int

    def sort_key(self) -> tuple[int, str]:
        return (self.expires_at or NEVER, self.lot_id)


@dataclass
class PoolRec:
    """What an account stores for one pool id; it outlives plan changes."""

    balance: int = 0
    next_reset: int | None = None
    spent: int = 0
    # An allowance's debt: this period's use beyond its amount after a plan change to a smaller
    # allowance; returns pay it off first, the next reset clears it.
    debt: int = 0
    cap: int | None = None  # an override set with set_pool_settings
    enabled: bool | None = None  # likewise
    lots: list[LotRec] = field(default_factory=list)


@dataclass
class Debit:
    """One pool's part of a charge or hold; partial returns shrink it."""

    pool_id: str
    code: str
    amount: int  # in the pool's unit
    covered: int  # meter micro-units
    mark: int  # the pool's next reset when taken (0 for pools without a period)
    rate: int
    lots: list[LotRec]


@dataclass
class Hold:
    debits: list[Debit]
    covered: int
    unit_cost: int
    per: int
    eligible: list[tuple[str, int]]
    expires_at: int
    meter: str


@dataclass
class Record:
    """An idempotency record: a charge (C), reservation (R), refund (F) or grant (G)."""

    kind: str
    fingerprint: tuple[object, ...]
    reply: Decision | Refund | GrantResult
    state: str = ""
    debits: list[Debit] = field(default_factory=list)
    covered: int = 0
    unit_cost: int = 0
    per: int = 1
    refunded: int = 0
    meter: str = ""
    settlement: Settlement | None = None


@dataclass
class Account:
    plan_id: str
    status: str
    anchor: int
    created: int
    clock: int
    stopped_until: int = 0
    terms: Terms = NO_TERMS
    pools: dict[str, PoolRec] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    # The thresholds' account fields (au:, tu:, cr:, tn) and the notice and topup events the
    # scripts would append (_ref_notices.py).
    fields: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, ...]] = field(default_factory=list)
    id: str = ""

    def pool(self, pool_id: str) -> PoolRec:
        return self.pools.setdefault(pool_id, PoolRec())


@dataclass(eq=False)
class Live:
    """A pool during one operation: its configuration (from the plan) and its stored state."""

    pool_id: str
    code: str
    rec: PoolRec
    config: Pool | None = None  # None: a ghost, a pool the current plan no longer has
    fresh: bool = False  # reset during this operation (a plan change's delta skips it)

    @property
    def ghost(self) -> bool:
        return self.config is None

    @property
    def cap(self) -> int:
        if self.config is None:
            return -1
        return self.config.cap if self.rec.cap is None else self.rec.cap

    @property
    def enabled(self) -> bool:
        if self.config is None:
            return False
        return self.config.enabled if self.rec.enabled is None else self.rec.enabled

    def remaining(self) -> int:
        """Balance in the pool's unit; for pay-as-you-go what the cap leaves (-1: no cap)."""
        if self.code == "P":
            return -1 if self.cap < 0 else max(0, self.cap - self.rec.spent)
        if self.code == "G":
            return sum(lot.amount for lot in self.rec.lots)
        return self.rec.balance


class Op:
    """One operation on one account at its clock, over the pools of its current plan."""

    def __init__(self, account: Account, plan: Plan) -> None:
        self.account = account
        self.plan = plan
        self.now = account.clock
        self.unpaid: str | None = None  # a recurring charge left unpaid that stops the account
        self.pools = [Live(p.id, p.code, account.pool(p.id), p) for p in plan.pools]
        self.by_id = {p.pool_id: p for p in self.pools}

    def pool(self, pool_id: str, code: str) -> Live:
        """The plan's pool, or a ghost that keeps the stored state of a pool it dropped."""
        live = self.by_id.get(pool_id)
        if live is None:
            live = Live(pool_id, code, self.account.pool(pool_id))
            self.by_id[pool_id] = live
        return live

    def unit(self, pool_id: str) -> str:
        pool = self.plan.pool(pool_id)
        return pool.balance_unit if pool else ""

    def movement(self, pool_id: str, amount: int, remaining: int, covered: int) -> Movement:
        return Movement(pool_id, amount, self.unit(pool_id), remaining, covered)

    def balances(self) -> tuple[Remaining, ...]:
        return tuple(Remaining(p.pool_id, p.remaining(), self.unit(p.pool_id)) for p in self.pools)

    def debit_rows(self, debits: list[Debit]) -> tuple[Movement, ...]:
        """What is left of each debit, with its pool's balance now."""
        return tuple(
            self.movement(d.pool_id, d.amount, self.pool(d.pool_id, d.code).remaining(), d.covered)
            for d in debits
            if d.amount != 0 or d.covered != 0
        )
