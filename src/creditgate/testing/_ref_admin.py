"""Reference model, part one: accounts, balances, settings, grants and the test clock."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from creditgate.domain.money import MAX_AMOUNT
from creditgate.domain.results import AccountState, GrantResult, Lot, PoolState
from creditgate.domain.terms import NO_TERMS, Terms
from creditgate.domain.terms import apply as apply_terms
from creditgate.domain.terms import check as check_terms
from creditgate.testing import _ref_notices as notices
from creditgate.testing._ref_recurring import recurring, states
from creditgate.testing._ref_state import Account, LotRec, Op, Record
from creditgate.testing._ref_walk import maintain_all

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.catalog import Catalog, Plan, Pool
    from creditgate.domain.topup import AutoTopUp

DAY_MS = 86_400_000
MAX_CLOCK_STEP_S = 10 * 366 * 86_400
MAX_ANCHOR = 31
MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01


class AdminModel:
    """Accounts and their settings, each account on its own frozen clock."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        hold_ttl_ms: int = 300_000,
        idempotency_ttl_ms: int = DAY_MS,
    ) -> None:
        self.catalog = catalog
        self.hold_ttl_ms = hold_ttl_ms
        self.idempotency_ttl_ms = idempotency_ttl_ms
        self.accounts: dict[str, Account] = {}

    @staticmethod
    def _key(account_id: str) -> Callable[[], str]:
        """What a top-up id hashes: the account's id (charge.lua's crossed())."""
        return lambda: account_id

    # --- helpers -------------------------------------------------------------------------

    def _account(self, account_id: str) -> Account:
        acct = self.accounts.get(account_id)
        if acct is None:
            msg = f"account {account_id!r} does not exist"
            raise NotFoundError(msg)
        return acct

    def _plan(self, plan_id: str) -> Plan:
        plan = self.catalog.plan(plan_id)
        if plan is None:
            msg = f"unknown plan {plan_id!r}"
            raise InvalidArgumentError(msg)
        return plan

    def _plan_of(self, acct: Account) -> Plan:
        """The account's plan as its terms make it."""
        return apply_terms(self._plan(acct.plan_id), acct.terms)

    def _op(self, acct: Account, *, fees: bool = True) -> Op:
        """Start an operation: the account's plan, brought up to date at its clock.

        ``fees=False`` leaves the recurring charges to the caller (a change of plan or terms
        charges them after the allowances changed).
        """
        op = Op(acct, self._plan_of(acct))
        key = self._key(acct.id)
        maintain_all(op, (lambda: recurring(op, key)) if fees else None)
        return op

    @staticmethod
    def _anchor(anchor_day: int) -> None:
        if not 0 <= anchor_day <= MAX_ANCHOR:
            msg = f"anchor_day must be 1-31, got {anchor_day}"
            raise InvalidArgumentError(msg)

    @staticmethod
    def _pool(plan: Plan, pool_id: str, kinds: tuple[str, ...]) -> Pool:
        pool = plan.pool(pool_id)
        if pool is None:
            msg = f"plan {plan.id} has no pool {pool_id!r}"
            raise NotFoundError(msg)
        if pool.kind not in kinds:
            msg = f"pool {pool_id!r} is a {pool.kind} pool"
            raise InvalidArgumentError(msg)
        return pool

    # --- operations ----------------------------------------------------------------------

    def balance(self, account_id: str) -> AccountState:
        check.check_id(account_id, "account_id")
        acct = self._account(account_id)
        op = self._op(acct)
        pools = tuple(
            PoolState(
                pool_id=p.pool_id,
                kind=cfg.kind,
                unit=cfg.balance_unit,
                meter=cfg.meter or "",
                balance=p.remaining(),
                period=cfg.period,
                next_reset=p.rec.next_reset or 0,
                spent=p.rec.spent,
                cap=p.cap,
                spend_unit=cfg.spend_unit,
                enabled=p.enabled,
                lots=tuple(Lot(x.lot_id, x.amount, x.expires_at) for x in p.rec.lots)
                if p.code == "G"
                else (),
            )
            for p, cfg in zip(op.pools, op.plan.pools, strict=True)
        )
        return AccountState(
            account_id=account_id,
            plan_id=acct.plan_id,
            status=acct.status,
            anchor_day=acct.anchor,
            stopped_until=acct.stopped_until,
            created=acct.created,
            test_clock=acct.clock,
            now=acct.clock,
            pools=pools,
            terms=acct.terms,
            recurring=states(op),
        )

    def create_account(  # noqa: PLR0913, PLR0917 - mirrors Engine.create_account
        self,
        account_id: str,
        plan_id: str,
        now: int,
        anchor_day: int = 0,
        status: str = "active",
        terms: Terms = NO_TERMS,
    ) -> AccountState:
        """Create an account whose clock reads ``now`` (unix ms) until it is advanced."""
        check.check_id(account_id, "account_id")
        check.check_status(status)
        check_terms(terms, self.catalog, self._plan(plan_id))
        self._anchor(anchor_day)
        if account_id in self.accounts:
            msg = f"account {account_id!r} already exists"
            raise AlreadyExistsError(msg)
        if anchor_day == 0:
            anchor_day = dt.datetime.fromtimestamp(now // 1000, tz=dt.UTC).day
        acct = Account(
            plan_id, status, anchor_day, created=now, clock=now, terms=terms, id=account_id
        )
        self.accounts[account_id] = acct
        self._op(acct)
        return self.balance(account_id)

    def update_account(
        self, account_id: str, plan_id: str = "", anchor_day: int = 0, status: str = ""
    ) -> AccountState:
        """Change plan, anchor or status; allowances in both plans keep this period's use."""
        check.check_id(account_id, "account_id")
        if status:
            check.check_status(status)
        new = self._plan(plan_id) if plan_id else None
        self._anchor(anchor_day)
        if not (plan_id or anchor_day or status):
            msg = "give plan_id, anchor_day or status; nothing to change"
            raise InvalidArgumentError(msg)
        acct = self._account(account_id)
        old = self._plan_of(acct)
        if anchor_day:
            acct.anchor = anchor_day
        if status:
            acct.status = status
        acct.plan_id = (new or old).id
        self._carry_over(acct, old)
        return self.balance(account_id)

    def set_terms(self, account_id: str, terms: Terms) -> AccountState:
        """Replace the account's terms; allowances whose amount changes keep this period's use."""
        check.check_id(account_id, "account_id")
        acct = self._account(account_id)
        check_terms(terms, self.catalog, self._plan(acct.plan_id))
        old = self._plan_of(acct)
        acct.terms = terms
        self._carry_over(acct, old)
        return self.balance(account_id)

    def _carry_over(self, acct: Account, old: Plan) -> None:
        """After a change from plan ``old`` (as terms made it): allowances keep their use."""
        target = self._plan_of(acct)
        deltas = {}
        for p in target.pools:
            before = old.pool(p.id)
            if p.kind == "allowance" and before is not None and before.kind == "allowance":
                deltas[p.id] = p.amount - before.amount
        op = self._op(acct, fees=False)
        for pool_id, delta in deltas.items():
            rec = op.by_id[pool_id].rec
            if not op.by_id[pool_id].fresh:
                # Usage carries over: what a smaller allowance cannot absorb is kept as debt.
                left = rec.balance - rec.debt + delta
                rec.balance, rec.debt = max(0, left), max(0, -left)
        recurring(op, self._key(acct.id))

    def set_pool_settings(
        self,
        account_id: str,
        pool_id: str,
        cap: int | None = None,
        enabled: bool | None = None,  # noqa: FBT001 - mirrors Engine.set_pool_settings
    ) -> AccountState:
        """Cap or switch an overage or pay-as-you-go pool.

        A cap below this period's spend stops the account until that pool's next reset when
        the pool says so (``stops_account``); else the pool alone has nothing left till then.
        """
        check.check_id(account_id, "account_id")
        acct = self._account(account_id)
        pool = self._pool(self._plan_of(acct), pool_id, ("overage", "payg"))
        if cap is not None:
            _check_cap(cap, pool.cap_min, pool.cap_max)
        op = self._op(acct)
        live = op.by_id[pool_id]
        if cap is not None:
            live.rec.cap = cap
            acct.fields.pop(f"cr:{pool_id}", None)  # spend_cap_reached re-arms
        if enabled is not None:
            live.rec.enabled = enabled
        reset = live.rec.next_reset
        # Seed 000 stops every action until renewal; otherwise (seed 004) only the pool is out.
        if (
            pool.stops_account
            and 0 <= live.cap < live.rec.spent
            and reset
            and reset > acct.stopped_until
        ):
            acct.stopped_until = reset
            notices.account_stopped(op, live)
        return self.balance(account_id)

    def set_auto_topup(
        self, account_id: str, pool_id: str, settings: AutoTopUp | None
    ) -> AccountState:
        """Turn auto top-up on or off; turned on at or below its threshold it starts one."""
        check.check_id(account_id, "account_id")
        encoded = "" if settings is None else settings.check().encode()
        acct = self._account(account_id)
        self._pool(self._plan_of(acct), pool_id, ("balance",))
        op = self._op(acct)
        if not encoded:
            acct.fields.pop(f"au:{pool_id}", None)
            return self.balance(account_id)
        acct.fields[f"au:{pool_id}"] = encoded
        live = op.by_id[pool_id]
        bal = live.rec.balance
        notices.crossed(op, live, bal, bal, "autotopup", self._key(account_id))
        return self.balance(account_id)

    def topup_paused(self, account_id: str, pool_id: str, topup_id: str, state: str) -> bool:
        """Pause auto top-up after the top-up in flight, if it is ``topup_id``."""
        check.check_id(account_id, "account_id")
        acct = self._account(account_id)
        self._pool(self._plan_of(acct), pool_id, ("balance",))
        self._op(acct)
        if acct.fields.get(f"tu:{pool_id}") != f"run:{topup_id}":
            return False
        acct.fields[f"tu:{pool_id}"] = state
        return True

    def grant(  # noqa: PLR0913, PLR0917 - mirrors Engine.grant
        self,
        account_id: str,
        pool_id: str,
        amount: int,
        grant_id: str,
        expires_at: int = 0,
        note: str = "",
        ends: str = "",
    ) -> GrantResult:
        """Add a lot (optionally expiring) to a grant pool, or money to a balance pool.

        ``ends``: the auto top-up state it ends (``run:<id>``, or ``failed`` for any failure).
        """
        check.check_grant(account_id, grant_id, amount, expires_at, note)
        acct = self._account(account_id)
        pool = self._pool(self._plan_of(acct), pool_id, ("grant", "balance"))
        if expires_at and pool.kind != "grant":
            msg = "expires_at applies to grant pools only"
            raise InvalidArgumentError(msg)
        fp = ("G", pool_id, amount, expires_at)
        rec = acct.records.get(grant_id)
        if rec is not None:
            return _replay_grant(rec, fp, grant_id)
        op = self._op(acct)
        live = op.by_id[pool_id]
        if 0 < expires_at <= op.now:
            msg = f"expires_at is not in the future (the account's clock reads {op.now} ms)"
            raise InvalidArgumentError(msg)
        if live.remaining() + amount > MAX_AMOUNT:
            msg = "the pool's balance would leave the exact range"
            raise InvalidArgumentError(msg)
        if pool.kind == "grant":
            live.rec.lots.append(LotRec(grant_id, amount, expires_at))
            live.rec.lots.sort(key=LotRec.sort_key)
        else:
            live.rec.balance += amount
        tu = acct.fields.get(f"tu:{pool_id}")
        if tu and ends and (tu == ends or (ends == "failed" and tu.startswith("failed:"))):
            del acct.fields[f"tu:{pool_id}"]
        recurring(op, self._key(account_id))  # money added pays a recurring charge left unpaid
        result = GrantResult(grant_id, live.remaining(), pool.balance_unit, replayed=False)
        acct.records[grant_id] = Record("G", fp, result)
        return result

    def advance_clock(self, account_id: str, seconds: int = 0, to_ms: int = 0) -> AccountState:
        """Move an account's clock forward by ``seconds`` or to ``to_ms``; never back."""
        check.check_id(account_id, "account_id")
        if (
            (seconds == 0) == (to_ms == 0)
            or not 0 <= seconds <= MAX_CLOCK_STEP_S
            or not (0 <= to_ms < MAX_CLOCK_MS)
        ):
            msg = "give either seconds or to_ms; the test clock only moves forward"
            raise InvalidArgumentError(msg)
        acct = self._account(account_id)
        op = self._op(acct)
        if to_ms and to_ms < op.now:
            msg = f"to_ms is before the account's clock ({op.now} ms)"
            raise InvalidArgumentError(msg)
        acct.clock = to_ms or op.now + seconds * 1000
        return self.balance(account_id)


def _check_cap(cap: int, low: int, high: int) -> None:
    if cap == -1 and high == -1:
        return
    if cap < 0 or cap < low or (high >= 0 and cap > high):
        msg = f"cap must be between {low} and {high} micro-units; got {cap}"
        raise InvalidArgumentError(msg)


def _replay_grant(rec: Record, fp: tuple[object, ...], grant_id: str) -> GrantResult:
    if rec.fingerprint != fp or not isinstance(rec.reply, GrantResult):
        msg = f"grant_id {grant_id!r} was already used for a different request"
        raise FailedPreconditionError(msg)
    return GrantResult(rec.reply.grant_id, rec.reply.balance, rec.reply.unit, replayed=True)
