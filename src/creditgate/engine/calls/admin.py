"""The balance, account and grant scripts: what AdminService and GetBalance do to accounts.

KEYS of each: [1..4] the account's keys; grant adds [5] the grant's idempotency record.
ARGV: lib.lua's prefix (``common``), then:
  balance  nothing
           reply {'OK', plan, status, anchor day, stopped until, now, created, test clock,
           per pool: balance, next reset, spent, cap, enabled 0/1, n lots, n x (lot, balance,
           expires at), then per recurring charge of the plan: next due, unpaid 0/1}
  account  'create', status, anchor day, create-if-absent '1'/'0', plan, terms, terms key
           -> {'OK'} or {'EXISTS'}
           'update', plan, status, anchor day, n, n x (allowance pool, amount delta) -> {'OK'}
           'terms', terms, terms key, n, n x (allowance pool, amount delta) -> {'OK'}
           'settings', pool, cap or '', enabled '1'/'0'/'', stops account '1'/'0' -> {'OK'}
           'clock', seconds ms, to ms -> {'OK'} or {'CLOCK_BACKWARDS', clock ms}
  grant    pool, amount, grant id, expires at, note, idempotency TTL ms, fingerprint
           reply {'OK', pool balance, replayed 0/1}, or {'IDEM_MISMATCH'}, {'PAST_EXPIRY', now},
           {'TOO_LARGE'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from creditgate.domain import terms as account_terms
from creditgate.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from creditgate.domain.recurring import cost as recurring_cost
from creditgate.domain.results import AccountState, GrantResult, Lot, PoolState, RecurringState
from creditgate.domain.wording import a_or_an, utc
from creditgate.engine.calls.common import Args, Context, fingerprint, text, too_large

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.catalog import Plan

__all__ = [
    "AccountCall", "BalanceCall", "GrantCall", "clock", "create", "pool_or_error", "set_terms",
    "settings", "update",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class BalanceCall:
    ctx: Context
    account_id: str
    script: str = "balance"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id)

    def argv(self, plan: Plan | None) -> Args:
        return self.ctx.prefix(self.account_id, plan)

    def result(self, plan: Plan | None, reply: list[Any]) -> AccountState:
        pools = []
        i = 8
        for p in plan.pools if plan else ():
            n_lots = reply[i + 5]
            lots = tuple(
                Lot(text(reply[i + 6 + 3 * k]), reply[i + 7 + 3 * k], reply[i + 8 + 3 * k])
                for k in range(n_lots)
            )
            pools.append(
                PoolState(
                    pool_id=p.id,
                    kind=p.kind,
                    unit=p.balance_unit,
                    meter=p.meter or "",
                    balance=reply[i],
                    period=p.period,
                    next_reset=reply[i + 1],
                    spent=reply[i + 2],
                    cap=reply[i + 3],
                    spend_unit=p.spend_unit,
                    enabled=reply[i + 4] == 1,
                    lots=lots,
                )
            )
            i += 6 + 3 * n_lots
        return AccountState(
            account_id=self.account_id,
            plan_id=text(reply[1]),
            status=text(reply[2]),
            anchor_day=reply[3],
            stopped_until=reply[4],
            now=reply[5],
            created=reply[6],
            test_clock=reply[7],
            pools=tuple(pools),
            terms=(plan.terms if plan else None) or account_terms.NO_TERMS,
            recurring=_recurring(plan, reply, i) if plan else (),
        )


def _recurring(plan: Plan, reply: list[Any], at: int) -> tuple[RecurringState, ...]:
    """The plan's recurring charges as balance.lua answers them from ``at``: due, unpaid."""
    return tuple(
        RecurringState(
            item.id,
            item.action,
            recurring_cost(plan, item),
            plan.actions[item.action].meter or "",
            reply[at + 2 * k],
            reply[at + 2 * k + 1] == 1,
        )
        for k, item in enumerate(plan.recurring)
    )


@dataclass(frozen=True, slots=True)
class AccountCall:
    """One of the account script's operations.

    Made by ``create``, ``update``, ``settings`` and ``clock`` below, which alone know each
    operation's ARGV.
    """

    ctx: Context
    account_id: str
    build: Callable[[Plan | None], Args]
    absent_build: Callable[[], Args] | None = None
    to_ms: int = 0  # for ``clock``: where the clock was asked to go (named in its refusal)
    script: str = "account"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id)

    def argv(self, plan: Plan | None) -> Args:
        return self.build(plan)

    def absent(self) -> Args | None:
        """ARGV when neither Redis nor the ledger has the account (``create`` only)."""
        return None if self.absent_build is None else self.absent_build()

    def result(self, plan: Plan | None, reply: list[Any]) -> bool:
        """False when the operation found nothing to change (``topup``: another state)."""
        del plan
        if reply[0] == b"UNCHANGED":
            return False
        if reply[0] == b"EXISTS":
            msg = f"account {self.account_id!r} already exists: use UpdateAccount to change it"
            raise AlreadyExistsError(msg)
        if reply[0] == b"CLOCK_BACKWARDS":
            msg = (
                f"to_unix_ms {utc(self.to_ms)} is before the account's clock ({utc(reply[1])}); it"
                " only moves forward"
            )
            raise InvalidArgumentError(msg)
        return True


def create(  # noqa: PLR0913, PLR0917 - the request's fields
    ctx: Context,
    account_id: str,
    plan: Plan,
    status: str,
    anchor_day: int,
    terms: account_terms.Terms = account_terms.NO_TERMS,
) -> AccountCall:
    """Create the account on ``plan`` with ``terms``, only where Redis and the ledger lack it."""
    made = account_terms.apply(plan, terms)
    args = [*ctx.prefix(account_id, made), "create", status, anchor_day]
    tail = [plan.id, terms.encode(), terms.key()]
    return AccountCall(ctx, account_id, lambda _: [*args, "0", *tail], lambda: [*args, "1", *tail])


def _deltas(old: Plan, new: Plan) -> Args:
    """(pool, new amount - old amount) of the allowances both plans have, flat."""
    deltas: Args = []
    for p in new.pools:
        before = old.pool(p.id)
        if p.kind == "allowance" and before is not None and before.kind == "allowance":
            deltas += [p.id, p.amount - before.amount]
    return deltas


def update(
    ctx: Context, account_id: str, new: Plan | None, status: str, anchor_day: int
) -> AccountCall:
    """Change plan, anchor or status; allowances both plans share keep this period's use.

    The account's terms stay and apply to the new plan.
    """

    def build(old: Plan | None) -> Args:
        if old is None:
            return ctx.header(account_id, None, [])
        target = account_terms.apply(new, old.terms or account_terms.NO_TERMS) if new else old
        deltas = _deltas(old, target)
        header = ctx.prefix(account_id, target)
        header[1] = old.key
        return [*header, "update", target.id, status, anchor_day, len(deltas) // 2, *deltas]

    return AccountCall(ctx, account_id, build)


def set_terms(ctx: Context, account_id: str, terms: account_terms.Terms) -> AccountCall:
    """Replace the account's terms, checked against its plan; allowances keep this period's use."""

    def build(old: Plan | None) -> Args:
        if old is None:
            return ctx.header(account_id, None, [])
        base = ctx.catalog.plan(old.id) or old
        account_terms.check(terms, ctx.catalog, base)
        target = account_terms.apply(base, terms)
        deltas = _deltas(old, target)
        header = ctx.prefix(account_id, target)
        header[1] = old.key
        return [*header, "terms", terms.encode(), terms.key(), len(deltas) // 2, *deltas]

    return AccountCall(ctx, account_id, build)


def settings(  # noqa: PLR0913, PLR0917 - the request's fields and the cap's check
    ctx: Context,
    account_id: str,
    pool_id: str,
    cap: int | None,
    enabled: bool | None,  # noqa: FBT001 - None means "leave as is"
    check_cap: Callable[[str, str, int, int, int], None],
) -> AccountCall:
    """Set an overage or pay-as-you-go pool's cap, or turn it on or off."""

    def build(plan: Plan | None) -> Args:
        if plan is None:
            return ctx.header(account_id, None, [])
        pool_or_error(plan, pool_id, ("overage", "payg"))
        pool = plan.by_id[pool_id]
        if cap is not None:
            check_cap(pool.id, pool.spend_unit, cap, pool.cap_min, pool.cap_max)
        return [
            *ctx.prefix(account_id, plan),
            "settings",
            pool_id,
            "" if cap is None else cap,
            "" if enabled is None else ("1" if enabled else "0"),
            "1" if pool.stops_account else "0",
        ]

    return AccountCall(ctx, account_id, build)


def auto_topup(ctx: Context, account_id: str, pool_id: str, settings: str) -> AccountCall:
    """Turn a balance pool's auto top-up on (``settings``: ``AutoTopUp.encode()``) or off ('')."""

    def build(plan: Plan | None) -> Args:
        if plan is None:
            return ctx.header(account_id, None, [])
        pool_or_error(plan, pool_id, ("balance",))
        return [*ctx.prefix(account_id, plan), "autotopup", pool_id, settings]

    return AccountCall(ctx, account_id, build)


def topup_state(ctx: Context, account_id: str, pool_id: str, expect: str, to: str) -> AccountCall:
    """Move a top-up from state ``expect`` to ``to`` (a failure or the monthly maximum)."""

    def build(plan: Plan | None) -> Args:
        if plan is None:
            return ctx.header(account_id, None, [])
        pool_or_error(plan, pool_id, ("balance",))
        return [*ctx.prefix(account_id, plan), "topup", pool_id, expect, to]

    return AccountCall(ctx, account_id, build)


def clock(ctx: Context, account_id: str, seconds: int, to_ms: int) -> AccountCall:
    """Move the account's frozen test clock forward by ``seconds`` or to ``to_ms``."""
    return AccountCall(
        ctx,
        account_id,
        lambda plan: [*ctx.prefix(account_id, plan), "clock", seconds * 1000, to_ms],
        to_ms=to_ms,
    )


@dataclass(frozen=True, slots=True)
class GrantCall:
    ctx: Context
    account_id: str
    pool_id: str
    amount: int
    grant_id: str
    expires_at: int
    note: str
    ends: str = ""  # the auto top-up state this grant ends (grant.lua ARGV [+7])
    script: str = "grant"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id, self.grant_id)

    def argv(self, plan: Plan | None) -> Args:
        if plan is None:
            return self.ctx.header(self.account_id, None, [])
        pool_or_error(plan, self.pool_id, ("grant", "balance"))
        if self.expires_at and plan.by_id[self.pool_id].kind != "grant":
            msg = "expires_at applies to grant pools only; money balances never expire"
            raise InvalidArgumentError(msg)
        return [
            *self.ctx.prefix(self.account_id, plan),
            self.pool_id,
            self.amount,
            self.grant_id,
            self.expires_at,
            self.note,
            self.ctx.idempotency_ttl_ms,
            fingerprint(f"G|{self.pool_id}|{self.amount}|{self.expires_at}"),
            self.ends,
        ]

    def result(self, plan: Plan | None, reply: list[Any]) -> GrantResult:
        if reply[0] == b"TOO_LARGE":
            msg = (
                f"the grant would take pool {self.pool_id!r} beyond the exact range "
                "(2^52 micro-units)"
            )
            raise InvalidArgumentError(msg)
        if reply[0] == b"IDEM_MISMATCH":
            msg = f"grant_id {self.grant_id!r} was already used for a different grant"
            raise FailedPreconditionError(msg)
        if reply[0] == b"PAST_EXPIRY":
            msg = (
                f"expires_at {utc(self.expires_at)} is not in the future: the account's clock"
                f" reads {utc(reply[1])}"
            )
            raise InvalidArgumentError(msg)
        too_large(reply)
        pool = plan.pool(self.pool_id) if plan else None
        return GrantResult(
            self.grant_id, reply[1], pool.balance_unit if pool else "", reply[2] == 1
        )


def pool_or_error(plan: Plan, pool_id: str, kinds: tuple[str, ...]) -> None:
    pool = plan.pool(pool_id)
    if pool is None:
        names = ", ".join(p.id for p in plan.pools)
        msg = f"plan {plan.id} has no pool {pool_id!r}; its pools are: {names}"
        raise NotFoundError(msg)
    if pool.kind not in kinds:
        msg = (
            f"pool {pool_id!r} is {a_or_an(pool.kind)} pool; this needs"
            f" {a_or_an(' or '.join(kinds))} pool"
        )
        raise InvalidArgumentError(msg)
