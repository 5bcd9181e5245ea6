"""Account operations: create, update, settings, grants, balances and the test clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain import requests as check
from creditgate.domain import topup
from creditgate.domain.errors import FailedPreconditionError, InvalidArgumentError
from creditgate.domain.terms import NO_TERMS, Terms
from creditgate.domain.terms import apply as apply_terms
from creditgate.domain.terms import check as check_terms
from creditgate.domain.wording import money
from creditgate.driver.failures import guarded
from creditgate.engine.calls import admin as calls
from creditgate.engine.calls.admin import BalanceCall, GrantCall

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan
    from creditgate.domain.results import AccountState, GrantResult
    from creditgate.domain.topup import AutoTopUp
    from creditgate.engine.calls.common import Context
    from creditgate.engine.runner import Runner

__all__ = ["AdminOps"]

_MAX_CLOCK_STEP_S = 10 * 366 * 86_400
_MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01: far enough for any test, exact in Lua
_MAX_ANCHOR_DAY = 31


class AdminOps:
    """What AdminService (and GetBalance) do to accounts; each one script call."""

    def __init__(self, runner: Runner, ctx: Context) -> None:
        self.runner = runner
        self.ctx = ctx

    async def balance(self, account_id: str) -> AccountState:
        """Every pool of the account, brought up to date (resets, expiries, expired holds)."""
        check.check_id(account_id, "account_id")
        return await self.runner.call(BalanceCall(self.ctx, account_id))

    async def create_account(
        self,
        account_id: str,
        plan_id: str,
        anchor_day: int = 0,
        status: str = "active",
        terms: Terms = NO_TERMS,
    ) -> AccountState:
        check.check_id(account_id, "account_id")
        check.check_status(status)
        plan = self._known_plan(plan_id)
        if not 0 <= anchor_day <= _MAX_ANCHOR_DAY:
            msg = f"anchor_day must be 1-31 (0: today), got {anchor_day}"
            raise InvalidArgumentError(msg)
        check_terms(terms, self.ctx.catalog, plan)
        # Created only where Redis and the ledger both lack it (the runner asks the ledger first).
        call = calls.create(self.ctx, account_id, plan, status, anchor_day, terms)
        await self.runner.call(call)
        self.runner.remember(account_id, apply_terms(plan, terms))
        return await self.balance(account_id)

    async def set_terms(self, account_id: str, terms: Terms) -> AccountState:
        """Replace the account's terms (seats, overrides, flags), checked against its plan.

        Allowances whose amount changes (seats, an override) keep this period's use: the
        difference is added to, or taken from, what is left of them at once.
        """
        check.check_id(account_id, "account_id")
        await self.runner.call(calls.set_terms(self.ctx, account_id, terms))
        self.runner.forget(account_id)
        return await self.balance(account_id)

    async def update_account(
        self, account_id: str, plan_id: str = "", anchor_day: int = 0, status: str = ""
    ) -> AccountState:
        """Change plan, anchor or status. Allowances shared by both plans keep this period's use."""
        check.check_id(account_id, "account_id")
        if status:
            check.check_status(status)
        new = self._known_plan(plan_id) if plan_id else None
        if not 0 <= anchor_day <= _MAX_ANCHOR_DAY:
            msg = f"anchor_day must be 1-31 (0 keeps it), got {anchor_day}"
            raise InvalidArgumentError(msg)
        if not (plan_id or anchor_day or status):
            msg = "give plan_id, anchor_day or status; nothing to change"
            raise InvalidArgumentError(msg)
        await self.runner.call(calls.update(self.ctx, account_id, new, status, anchor_day))
        if new is not None:
            self.runner.forget(account_id)
        return await self.balance(account_id)

    async def set_pool_settings(
        self,
        account_id: str,
        pool_id: str,
        cap: int | None = None,
        enabled: bool | None = None,  # noqa: FBT001 - None means "leave as is"
    ) -> AccountState:
        check.check_id(account_id, "account_id")
        call = calls.settings(self.ctx, account_id, pool_id, cap, enabled, _check_cap)
        await self.runner.call(call)
        return await self.balance(account_id)

    async def grant(  # noqa: PLR0913, PLR0917 - mirrors the request message
        self,
        account_id: str,
        pool_id: str,
        amount: int,
        grant_id: str,
        expires_at: int = 0,
        note: str = "",
        ends: str = "",
    ) -> GrantResult:
        """Add money to a pool; ``ends`` names the auto top-up state the grant ends.

        ``run:<id>`` for the top-up it pays, ``failed`` for a one-time purchase, which resumes
        a paused auto top-up.
        """
        check.check_grant(account_id, grant_id, amount, expires_at, note)
        call = GrantCall(self.ctx, account_id, pool_id, amount, grant_id, expires_at, note, ends)
        return await self.runner.call(call)

    async def set_auto_topup(
        self, account_id: str, pool_id: str, settings: AutoTopUp | None
    ) -> AccountState:
        """Turn auto top-up of a balance pool on (checked against seed 003's limits) or off.

        Turned on at or below its threshold, it starts a top-up at once.
        """
        check.check_id(account_id, "account_id")
        encoded = "" if settings is None else settings.check().encode()
        await self.runner.call(calls.auto_topup(self.ctx, account_id, pool_id, encoded))
        return await self.balance(account_id)

    async def auto_topup(self, account_id: str, pool_id: str) -> topup.AutoTopUpView:
        """A balance pool's auto top-up settings and state (the account loaded if missing).

        ``pool_id`` empty: the plan's one balance pool.
        """
        state = await self.balance(account_id)
        money_pools = [p for p in state.pools if p.kind == "balance"]
        if not pool_id and len(money_pools) == 1:
            pool_id = money_pools[0].pool_id
        pool = next((p for p in money_pools if p.pool_id == pool_id), None)
        if pool is None:
            names = ", ".join(p.pool_id for p in money_pools) or "none"
            msg = f"auto top-up is set on a balance pool; plan {state.plan_id!r} has {names}" + (
                f", not {pool_id!r}" if pool_id else ": name one in pool_id"
            )
            raise InvalidArgumentError(msg)
        key = self.ctx.keys.account(account_id)[0]
        fields = (topup.settings_field(pool_id), topup.state_field(pool_id))
        raw = await guarded(self.runner.redis.hmget(key, fields))
        return topup.AutoTopUpView(
            account_id, pool_id, pool.unit, pool.balance,
            topup.parse_settings(raw[0]), topup.parse_state(raw[1]),
        )  # fmt: skip

    async def topup_paused(self, account_id: str, pool_id: str, topup_id: str, state: str) -> bool:
        """Pause auto top-up after top-up ``topup_id`` (``failed:<id>``, ``max:<until ms>``).

        Only while that top-up is the one in flight; False when it is not (a redelivery).
        """
        check.check_id(account_id, "account_id")
        call = calls.topup_state(self.ctx, account_id, pool_id, f"run:{topup_id}", state)
        return bool(await self.runner.call(call))

    async def advance_clock(
        self, account_id: str, seconds: int = 0, to_ms: int = 0
    ) -> AccountState:
        """Move an account's frozen test clock forward by ``seconds`` or to ``to_ms``."""
        check.check_id(account_id, "account_id")
        if not self.ctx.test_clock:
            msg = "the test clock is off: start the server with CREDITGATE_TEST_CLOCK=true"
            raise FailedPreconditionError(msg)
        if (
            (seconds == 0) == (to_ms == 0)
            or not 0 <= seconds <= _MAX_CLOCK_STEP_S
            or not 0 <= to_ms < _MAX_CLOCK_MS
        ):
            msg = (
                f"give either seconds (1-{_MAX_CLOCK_STEP_S}) or to_unix_ms (a time after the "
                "account's clock and before the year 3000); the test clock only moves forward"
            )
            raise InvalidArgumentError(msg)
        await self.runner.call(calls.clock(self.ctx, account_id, seconds, to_ms))
        return await self.balance(account_id)

    def _known_plan(self, plan_id: str) -> Plan:
        plan = self.ctx.catalog.plan(plan_id)
        if plan is None:
            names = ", ".join(sorted(self.ctx.catalog.plans))
            msg = f"unknown plan {plan_id!r}; the catalog has: {names}"
            raise InvalidArgumentError(msg)
        return plan


def _check_cap(pool_id: str, unit: str, cap: int, low: int, high: int) -> None:
    """INVALID_ARGUMENT unless ``cap`` is in the plan's range; the message in money."""
    if cap == -1 and high == -1:
        return
    if cap < 0 or cap < low or (high >= 0 and cap > high):
        allowed = (
            f"{money(low, unit)} or more (-1: no cap)"
            if high < 0
            else f"between {money(low, unit)} and {money(high, unit)}"
        )
        msg = (
            f"cap for pool {pool_id!r} must be {allowed}, got {money(cap, unit)}"
            f" (cap counts micro-units: {money(1_000_000, unit)} = 1,000,000)"
        )
        raise InvalidArgumentError(msg)
