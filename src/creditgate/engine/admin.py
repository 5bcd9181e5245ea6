"""Account operations: create, update, settings, grants, balances and the test clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from creditgate.domain.results import AccountState, GrantResult
from creditgate.domain.wording import money, utc
from creditgate.engine import replies
from creditgate.engine.core import Args, EngineCore, fingerprint, pool_or_error, too_large

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan

_MAX_CLOCK_STEP_S = 10 * 366 * 86_400
_MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01: far enough for any test, exact in Lua


class AdminEngine(EngineCore):
    """What AdminService (and GetBalance) do to accounts; each one script call."""

    async def balance(self, account_id: str) -> AccountState:
        """Every pool of the account, brought up to date (resets, expiries, expired holds)."""
        check.check_id(account_id, "account_id")

        def build(plan: Plan | None) -> Args:
            return self.header(account_id, plan, self.plain_args(plan) if plan else [])

        plan, reply = await self.run(
            self._scripts.balance, account_id, self.keys.account(account_id), build
        )
        return replies.account_state(account_id, plan, reply)

    async def create_account(
        self, account_id: str, plan_id: str, anchor_day: int = 0, status: str = "active"
    ) -> AccountState:
        check.check_id(account_id, "account_id")
        check.check_status(status)
        plan = self._known_plan(plan_id)
        if not 0 <= anchor_day <= 31:  # noqa: PLR2004
            msg = f"anchor_day must be 1-31 (0: today), got {anchor_day}"
            raise InvalidArgumentError(msg)
        args = [*self.header(account_id, plan, self.plain_args(plan)), "create", status, anchor_day]
        # Created only where Redis and the ledger both lack it (run() asks the ledger first).
        _, reply = await self.run(
            self._scripts.account,
            account_id,
            self.keys.account(account_id),
            lambda _: [*args, "0"],
            absent=lambda _: [*args, "1"],
        )
        if reply[0] == b"EXISTS":
            msg = f"account {account_id!r} already exists: use UpdateAccount to change it"
            raise AlreadyExistsError(msg)
        self.remember(account_id, plan.id)
        return await self.balance(account_id)

    async def update_account(
        self, account_id: str, plan_id: str = "", anchor_day: int = 0, status: str = ""
    ) -> AccountState:
        """Change plan, anchor or status. Allowances shared by both plans keep this period's use."""
        check.check_id(account_id, "account_id")
        if status:
            check.check_status(status)
        new = self._known_plan(plan_id) if plan_id else None
        if not 0 <= anchor_day <= 31:  # noqa: PLR2004
            msg = f"anchor_day must be 1-31 (0 keeps it), got {anchor_day}"
            raise InvalidArgumentError(msg)

        def build(old: Plan | None) -> Args:
            if old is None:
                return self.header(account_id, None, [])
            target = new or old
            deltas: Args = []
            for p in target.pools:
                before = old.pool(p.id)
                if p.kind == "allowance" and before is not None and before.kind == "allowance":
                    deltas += [p.id, p.amount - before.amount]
            header = self.header(account_id, target, self.plain_args(target))
            header[1] = old.id
            return [*header, "update", target.id, status, anchor_day, len(deltas) // 2, *deltas]

        if not (plan_id or anchor_day or status):
            msg = "give plan_id, anchor_day or status; nothing to change"
            raise InvalidArgumentError(msg)
        await self.run(self._scripts.account, account_id, self.keys.account(account_id), build)
        if new is not None:
            self.remember(account_id, new.id)
        return await self.balance(account_id)

    async def set_pool_settings(
        self,
        account_id: str,
        pool_id: str,
        cap: int | None = None,
        enabled: bool | None = None,  # noqa: FBT001 - None means "leave as is"
    ) -> AccountState:
        check.check_id(account_id, "account_id")

        def build(plan: Plan | None) -> Args:
            if plan is None:
                return self.header(account_id, None, [])
            pool_or_error(plan, pool_id, ("overage", "payg"))
            pool = plan.by_id[pool_id]
            if cap is not None:
                self._check_cap(pool.id, pool.spend_unit, cap, pool.cap_min, pool.cap_max)
            return [
                *self.header(account_id, plan, self.plain_args(plan)),
                "settings",
                pool_id,
                "" if cap is None else cap,
                "" if enabled is None else ("1" if enabled else "0"),
                "1" if pool.stops_account else "0",
            ]

        await self.run(self._scripts.account, account_id, self.keys.account(account_id), build)
        return await self.balance(account_id)

    async def grant(  # noqa: PLR0913, PLR0917 - mirrors the request message
        self,
        account_id: str,
        pool_id: str,
        amount: int,
        grant_id: str,
        expires_at: int = 0,
        note: str = "",
    ) -> GrantResult:
        check.check_grant(account_id, grant_id, amount, expires_at, note)
        fp = fingerprint(f"G|{pool_id}|{amount}|{expires_at}")
        keys = self.keys.account(account_id, grant_id)
        unit = ""

        def build(plan: Plan | None) -> Args:
            nonlocal unit
            if plan is None:
                return self.header(account_id, None, [])
            pool_or_error(plan, pool_id, ("grant", "balance"))
            pool = plan.by_id[pool_id]
            unit = pool.balance_unit
            if expires_at and pool.kind != "grant":
                msg = "expires_at applies to grant pools only; money balances never expire"
                raise InvalidArgumentError(msg)
            return [
                *self.header(account_id, plan, self.plain_args(plan)),
                pool_id,
                amount,
                grant_id,
                expires_at,
                note,
                self.idempotency_ttl_ms,
                fp,
            ]

        _, reply = await self.run(self._scripts.grant, account_id, keys, build)
        if reply[0] == b"TOO_LARGE":
            msg = f"the grant would take pool {pool_id!r} beyond the exact range (2^52 micro-units)"
            raise InvalidArgumentError(msg)
        if reply[0] == b"IDEM_MISMATCH":
            msg = f"grant_id {grant_id!r} was already used for a different grant"
            raise FailedPreconditionError(msg)
        if reply[0] == b"PAST_EXPIRY":
            msg = (
                f"expires_at {utc(expires_at)} is not in the future: the account's clock reads"
                f" {utc(reply[1])}"
            )
            raise InvalidArgumentError(msg)
        too_large(reply)
        return GrantResult(grant_id, reply[1], unit, reply[2] == 1)

    async def advance_clock(
        self,
        account_id: str,
        seconds: int = 0,
        to_ms: int = 0,
    ) -> AccountState:
        """Move an account's frozen test clock forward by ``seconds`` or to ``to_ms``."""
        check.check_id(account_id, "account_id")
        if not self.test_clock:
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

        def build(plan: Plan | None) -> Args:
            args = self.plain_args(plan) if plan else []
            return [*self.header(account_id, plan, args), "clock", seconds * 1000, to_ms]

        _, reply = await self.run(
            self._scripts.account, account_id, self.keys.account(account_id), build
        )
        if reply[0] == b"CLOCK_BACKWARDS":
            msg = (
                f"to_unix_ms {utc(to_ms)} is before the account's clock ({utc(reply[1])}); it"
                " only moves forward"
            )
            raise InvalidArgumentError(msg)
        return await self.balance(account_id)

    # --- helpers -------------------------------------------------------------------------

    def _known_plan(self, plan_id: str) -> Plan:
        plan = self.catalog.plan(plan_id)
        if plan is None:
            names = ", ".join(sorted(self.catalog.plans))
            msg = f"unknown plan {plan_id!r}; the catalog has: {names}"
            raise InvalidArgumentError(msg)
        return plan

    @staticmethod
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
