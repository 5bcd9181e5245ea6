"""``Credits``: the credits view, history and usage of an account, from the ledger alone.

Every input is checked before anything is read (InvalidArgumentError names the field); a ledger
that cannot be reached is UnavailableError. Amounts are integer micro-units of the pool's unit.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from creditgate.credits import cursor as cursors
from creditgate.credits.lag import measure, stream_tip
from creditgate.credits.period import usage_period
from creditgate.credits.view import (
    CreditsView,
    Movement,
    MovementPage,
    PoolUsage,
    UsageRow,
    UsageView,
    movement_type,
)
from creditgate.domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from creditgate.domain.requests import check_id
from creditgate.domain.topup import (
    AutoTopUpView,
    parse_settings,
    parse_state,
    settings_field,
    state_field,
)
from creditgate.ledger.store import LedgerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from creditgate.credits.view import Lag
    from creditgate.domain.catalog import Catalog, Plan, Pool
    from creditgate.engine import Engine
    from creditgate.ledger.store import LedgerStore, Transaction

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "RECENT", "Credits"]

RECENT = 5  # seed 003's card: the 5 most recent movements
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except LedgerError as exc:
        msg = f"the ledger database is unavailable ({exc}); retry"
        raise UnavailableError(msg) from exc


def _pool(plan: Plan, pool_id: str) -> Pool:
    pool = plan.by_id.get(pool_id)
    if pool is None:
        msg = f"plan {plan.id} has no pool {pool_id!r}; its pools are: {', '.join(plan.by_id)}"
        raise NotFoundError(msg)
    return pool


def _balance_pool(plan: Plan) -> Pool:
    pool = next((p for p in plan.pools if p.kind == "balance"), None)
    if pool is None:
        msg = f"plan {plan.id} has no balance pool; give pool_id, one of: {', '.join(plan.by_id)}"
        raise FailedPreconditionError(msg)
    return pool


def _top_up(account: str, fields: dict[str, bytes], pool: Pool, balance: int) -> AutoTopUpView:
    """The pool's ``au:``/``tu:`` fields as the ledger mirrors them, read by domain/topup.py."""
    return AutoTopUpView(
        account,
        pool.id,
        pool.balance_unit,  # an allowance's is its meter (``unit`` is a money pool's)
        balance,
        parse_settings(fields.get(settings_field(pool.id))),
        parse_state(fields.get(state_field(pool.id))),
    )


class Credits:
    """Reads ``ledger`` with the plans of ``catalog``.

    ``clock`` is the wall clock in unix ms; ``tip`` names the newest event of an account's
    shard stream in Redis (``lag.stream_tip``; None: the lag is only the ledger's upper bound).
    """

    def __init__(
        self,
        ledger: LedgerStore,
        catalog: Catalog,
        clock: Callable[[], int] = _wall_ms,
        tip: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.clock = clock
        self.tip = tip

    @classmethod
    def of(cls, ledger: LedgerStore | None, engine: Engine) -> Credits | None:
        """The credits view of ``ledger`` for ``engine``'s plans and streams; None: no ledger."""
        if ledger is None:
            return None
        return cls(ledger, engine.catalog, tip=stream_tip(engine.redis, engine.keys))

    async def _account(self, account: str) -> tuple[dict[str, bytes], Plan]:
        check_id(account, "account_id")
        fields = await self.ledger.account_fields(account)
        if not fields:
            msg = (
                f"account {account!r} is not in the ledger: it does not exist, or it was "
                "created moments ago and the ledger worker has not applied it yet (retry)"
            )
            raise NotFoundError(msg)
        plan_id = fields.get("plan", b"").decode()
        plan = self.catalog.plan(plan_id)
        if plan is None:
            msg = f"account {account!r} is on plan {plan_id!r}, which the plans file lacks"
            raise FailedPreconditionError(msg)
        return fields, plan

    async def lag(self, account: str) -> Lag:
        return await measure(self.ledger, account, self.clock(), self.tip)

    def _unit(self, plan: Plan, pool_id: str) -> str:
        """The unit of ``pool_id``: the plan's, else the one every plan with that pool agrees on.

        A pool of a plan the account had before keeps its unit in the history; '' when the
        plans disagree (or none has it any more).
        """
        pool = plan.by_id.get(pool_id)
        if pool is not None:
            return pool.balance_unit
        units = {p.units[pool_id] for p in self.catalog.plans.values() if pool_id in p.units}
        return units.pop() if len(units) == 1 else ""

    def _movement(self, plan: Plan, tx: Transaction) -> Movement:
        return Movement(
            type=movement_type(tx.kind, tx.request_id),
            pool=tx.pool,
            unit=self._unit(plan, tx.pool),
            amount=tx.delta,
            balance=tx.balance_after,
            time_ms=tx.time_ms,
            request_id=tx.request_id,
            action=tx.action or "",
            event_id=tx.event_id,
        )

    async def credits(self, account: str, pool_id: str = "") -> CreditsView:
        """Seed 003's Credits card of a balance pool (``pool_id`` '' : the plan's first)."""
        with _reading():
            fields, plan = await self._account(account)
            pool = _pool(plan, pool_id) if pool_id else _balance_pool(plan)
            if pool.kind == "payg":
                msg = (
                    f"pool {pool.id!r} is pay-as-you-go: it holds no credits (its spend and cap "
                    "are in GetBalance); give a balance, grant or allowance pool"
                )
                raise InvalidArgumentError(msg)
            page = await self.ledger.transactions(account, RECENT, None, pool.id)
            totals = next((t for t in await self.ledger.totals(account) if t.pool == pool.id), None)
            balance = (await self.ledger.pool_balances(account)).get(pool.id, 0)
            lag = await self.lag(account)
        top_up = _top_up(account, fields, pool, balance)
        au = top_up.settings
        threshold = au.threshold if au is not None else pool.low_balance
        return CreditsView(
            account=account,
            plan=plan.id,
            pool=pool.id,
            unit=pool.balance_unit,
            balance=balance,
            low_balance=balance <= threshold,
            threshold=threshold,
            lifetime_added=totals.added if totals else 0,
            lifetime_spent=totals.spent if totals else 0,
            auto_top_up=top_up,
            recent=tuple(self._movement(plan, tx) for tx in page.items),
            more_history=page.next_cursor is not None,
            lag=lag,
        )

    async def transactions(
        self, account: str, pool_id: str = "", limit: int = 0, cursor: str = ""
    ) -> MovementPage:
        """Movements newest first (of ``pool_id`` only, if given), ``limit`` (1-100) a page."""
        check_id(account, "account_id")
        if not 0 <= limit <= MAX_LIMIT:
            msg = f"limit {limit}: give 1-{MAX_LIMIT} (0: {DEFAULT_LIMIT})"
            raise InvalidArgumentError(msg)
        position = cursors.decode(account, pool_id, cursor) if cursor else None
        with _reading():
            _, plan = await self._account(account)
            if pool_id:
                _pool(plan, pool_id)
            page = await self.ledger.transactions(
                account, limit or DEFAULT_LIMIT, position, pool_id or None
            )
            lag = await self.lag(account)
        after = page.next_cursor
        return MovementPage(
            tuple(self._movement(plan, tx) for tx in page.items),
            cursors.encode(account, pool_id, after) if after else "",
            lag,
        )

    async def usage(
        self, account: str, month: str = "", from_day: str = "", to_day: str = ""
    ) -> UsageView:
        """Net consumption by action and pool over a period, and what each pool has now.

        The period: ``month``, or ``from_day``..``to_day``; default this month on the account's
        clock.
        """
        check_id(account, "account_id")
        usage_period(month, from_day, to_day, 0)  # the input is checked before any read
        with _reading():
            fields, plan = await self._account(account)
            clock = fields.get("clk")  # a test-clock account's own time
            since, until = usage_period(
                month, from_day, to_day, int(clock) if clock else self.clock()
            )
            rows = await self.ledger.usage(account, "month", since, until)
            balances = await self.ledger.pool_balances(account)
            lag = await self.lag(account)
        by_key: dict[tuple[str, str], int] = {}
        for row in rows:
            by_key[row.action, row.pool] = by_key.get((row.action, row.pool), 0) + row.amount
        actions = []
        for (action, pool_id), amount in sorted(by_key.items()):
            price = plan.actions.get(action)
            pool = plan.by_id.get(pool_id)
            unit = pool.balance_unit if pool else ""
            meter = (price.meter or "") if price else ""
            actions.append(UsageRow(action, meter, pool_id, unit, amount))
        used: dict[str, int] = {}
        for r in actions:
            used[r.pool] = used.get(r.pool, 0) + r.amount
        pools = tuple(
            PoolUsage(p.id, p.kind, p.balance_unit, used.get(p.id, 0), balances.get(p.id, 0))
            for p in plan.pools
        )
        return UsageView(account, plan.id, since, until, tuple(actions), pools, lag)
