"""The engine: every quota and admin operation, each one script call on one account's slot."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    AlreadyExistsError,
    CreditgateError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from creditgate.domain.money import format_micro
from creditgate.domain.results import (
    AccountState,
    Decision,
    GrantResult,
    Reason,
    Refund,
    Release,
    Settlement,
)
from creditgate.engine import replies
from creditgate.engine.core import Args, EngineCore, pool_or_error, require_plan
from creditgate.engine.fastpath import command, encode

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from creditgate.domain.catalog import Plan

_MAX_CLOCK_STEP_S = 10 * 366 * 86_400
_MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01: far enough for any test, exact in Lua
_REASON_TEXT = {
    Reason.INSUFFICIENT_CREDITS: "not enough credits in the pools that accept this action",
    Reason.SPEND_CAP_REACHED: "the monthly spend cap would be exceeded",
    Reason.ACCOUNT_SUSPENDED: "the account is suspended",
    Reason.ACCOUNT_STOPPED: "the account is stopped until its renewal (a cap was lowered below "
    "this period's spend)",
    Reason.NOT_ENTITLED: "no pool of the plan accepts this action with these attributes",
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Consume:
    """A validated CheckAndConsume/Reserve, ready to run against any plan."""

    keys: tuple[str, ...]
    build: Callable[[Plan | None], Args]
    encoded: Callable[[Plan, str], bytes]
    rid: str
    action: str
    attributes: dict[str, str]
    dry_run: bool
    reserve: bool


def _fingerprint(text: str) -> str:
    """What an idempotency record remembers of its request, to refuse reuse for another."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _explain(d: Decision, action: str) -> str:
    if d.allowed:
        return ""
    text = f"{action}: {_REASON_TEXT.get(d.reason, d.reason.name.lower())}"
    if d.shortfall:
        text += f" (short by {format_micro(d.shortfall)} {d.meter})"
    if d.retry_at:
        text += f"; it clears by itself at unix ms {d.retry_at}"
    return text


class Engine(EngineCore):
    """Typed operations over the Lua scripts. Validates every input before touching Redis."""

    # --- quota ---------------------------------------------------------------------------

    async def consume(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: dict[str, str],
        request_id: str = "",
        *,
        dry_run: bool = False,
        hold_ttl_ms: int | None = None,
    ) -> Decision:
        """CheckAndConsume; with ``hold_ttl_ms`` a Reserve (the credits are held, not spent)."""
        call = self._prepare(
            account_id,
            action,
            quantity,
            attributes,
            request_id,
            dry_run=dry_run,
            hold_ttl_ms=hold_ttl_ms,
        )
        if isinstance(call, Decision):
            return call
        if self.fast is not None:
            plan_id = self._plans.get(account_id)
            plan = self.catalog.plan(plan_id) if plan_id else None
            if plan is not None:
                reply = await self._fast(call, plan)
                if reply is not None:
                    return self._decide(call, plan, reply)
        plan, reply = await self.run(self._scripts.consume, account_id, call.keys, call.build)
        return self._decide(call, require_plan(plan), reply)

    async def _fast(self, call: _Consume, plan: Plan) -> list[Any] | None:
        """Run the consume script over the pipelined connection.

        None sends the call down the regular path: an unknown plan or account, NOSCRIPT after a
        Redis restart, any other error reply.
        """
        assert self.fast is not None  # noqa: S101 - checked by the caller
        try:
            reply = await self.fast.call(call.encoded(plan, self._scripts.consume.sha))
        except (ConnectionError, TimeoutError, OSError) as exc:
            msg = f"Redis did not answer ({exc}); retry with the same request_id"
            raise UnavailableError(msg) from exc
        if not isinstance(reply, list) or reply[0] in (b"PLAN", b"NO_ACCOUNT"):
            return None
        return reply

    async def consume_many(
        self,
        requests: Sequence[tuple[str, str, int, dict[str, str], str, bool]],
    ) -> list[Decision | CreditgateError]:
        """Independent CheckAndConsume decisions in one Redis pipeline (one round trip).

        Each is its own atomic script call; a request that fails gets its error in its slot, but
        an unreachable Redis fails the whole batch. Accounts whose plan this sidecar has not
        seen yet go through consume() one by one.
        """
        out, queued = self._prepare_batch(requests)
        replies = await self._send_batch(queued)
        for (i, call, plan), reply in zip(queued, replies, strict=True):
            if isinstance(reply, list) and reply[0] not in (b"PLAN", b"NO_ACCOUNT"):
                out[i] = self._settled_or_error(call, plan, reply)
        for i, slot in enumerate(out):
            if slot is None:  # plan not known here yet, or an error reply: one by one
                out[i] = await self._consume_or_error(*requests[i])
        return [r for r in out if r is not None]

    def _prepare_batch(
        self,
        requests: Sequence[tuple[str, str, int, dict[str, str], str, bool]],
    ) -> tuple[list[Decision | CreditgateError | None], list[tuple[int, _Consume, Plan]]]:
        """Validate every item; queue those whose account's plan this sidecar knows."""
        out: list[Decision | CreditgateError | None] = [None] * len(requests)
        queued: list[tuple[int, _Consume, Plan]] = []
        for i, (account_id, action, quantity, attributes, rid, dry_run) in enumerate(requests):
            try:
                call = self._prepare(
                    account_id, action, quantity, attributes, rid, dry_run=dry_run, hold_ttl_ms=None
                )
            except CreditgateError as exc:
                out[i] = exc
                continue
            if isinstance(call, Decision):
                out[i] = call
                continue
            plan_id = self._plans.get(account_id)
            plan = self.catalog.plan(plan_id) if plan_id else None
            if plan is not None:
                queued.append((i, call, plan))
        return out, queued

    async def _send_batch(self, queued: list[tuple[int, _Consume, Plan]]) -> list[Any]:
        """Send the queued items in one round trip.

        That is the fast connection's single write, or a redis-py pipeline. An unreachable Redis
        fails the whole batch.
        """
        if not queued:
            return []
        if self.fast is not None:
            sha = self._scripts.consume.sha
            try:
                return await self.fast.call_many([c.encoded(p, sha) for _, c, p in queued])
            except (ConnectionError, TimeoutError, OSError) as exc:
                msg = f"Redis did not answer ({exc}); retry with the same request_ids"
                raise UnavailableError(msg) from exc
        pipe = self.redis.pipeline(transaction=False)
        for _, call, plan in queued:
            await self._scripts.consume(keys=call.keys, args=call.build(plan), client=pipe)
        return await self.execute(pipe)

    def _settled_or_error(
        self,
        call: _Consume,
        plan: Plan,
        reply: list[Any],
    ) -> Decision | CreditgateError:
        try:
            return self._decide(call, plan, reply)
        except CreditgateError as exc:
            return exc

    async def _consume_or_error(  # noqa: PLR0913, PLR0917 - one batch item
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: dict[str, str],
        request_id: str,
        dry_run: bool,  # noqa: FBT001
    ) -> Decision | CreditgateError:
        try:
            return await self.consume(
                account_id, action, quantity, attributes, request_id, dry_run=dry_run
            )
        except UnavailableError:
            raise  # Redis is gone for the whole batch, not for one request
        except CreditgateError as exc:
            return exc

    def _prepare(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: dict[str, str],
        request_id: str,
        *,
        dry_run: bool,
        hold_ttl_ms: int | None,
    ) -> _Consume | Decision:
        check.check_id(account_id, "account_id")
        reserve = hold_ttl_ms is not None
        rid = check.check_id(
            request_id, "reservation_id" if reserve else "request_id", generate=True
        )
        check.check_quantity(quantity)
        check.check_attributes(attributes)
        if action not in self.catalog.actions:
            check.check_id(action, "action")
            return Decision(
                allowed=False,
                reason=Reason.UNKNOWN_ACTION,
                cost=0,
                meter="",
                debits=(),
                balances=(),
                request_id=rid,
                message=(f"action {action!r} is not in the price book; add it to the plans file"),
            )
        mode = "R" if reserve else "C"
        at = json.dumps(attributes, sort_keys=True, separators=(",", ":")) if attributes else ""
        fp = _fingerprint(f"{mode}|{action}|{quantity}|{at}")
        tail: Args = [mode, rid, fp, quantity]
        flags: Args = [
            action,
            at,
            "1" if dry_run else "0",
            self.idempotency_ttl_ms,
            hold_ttl_ms or 0,
        ]

        def build(plan: Plan | None) -> Args:
            if plan is None:
                return self.header(account_id, None, [])
            pool_args, price, _ = self.consume_args(plan, action, attributes)
            uc, per, meter = (price.unit_cost, price.per, price.meter) if price else (0, 1, "")
            return [*self.header(account_id, plan, pool_args), *tail, uc, per, *flags, meter]

        keys = (*self.keys.account(account_id), self.keys.record(account_id, rid))

        def encoded(plan: Plan, sha: str) -> bytes:
            pool_args, price, static = self.consume_args(plan, action, attributes)
            uc, per, meter = (price.unit_cost, price.per, price.meter) if price else (0, 1, "")
            # EVALSHA sha 5 keys... account_id [plan clock n pools...] tail...
            count = 3 + len(keys) + 4 + len(pool_args) + len(tail) + 3 + len(flags)
            return command(
                count,
                encode(["EVALSHA", sha, len(keys), *keys, account_id])
                + static
                + encode([*tail, uc, per, *flags, meter]),
            )

        return _Consume(
            keys, build, encoded, rid, action, attributes, dry_run=dry_run, reserve=reserve
        )

    def _decide(self, call: _Consume, plan: Plan, reply: list[Any]) -> Decision:
        if reply[0] == b"IDEM_MISMATCH":
            field = "reservation_id" if call.reserve else "request_id"
            msg = (
                f"{field} {call.rid!r} was already used on this account for a different "
                "request; use a new id for a new request"
            )
            raise FailedPreconditionError(msg)
        self._too_large(reply)
        if reply[0] == b"REPLAY":
            plan, meter, reply = self._recorded(plan, reply)
        else:
            price = self.consume_args(plan, call.action, call.attributes)[1]
            meter = price.meter if price else ""
        d = replies.decision(plan, reply, call.rid, meter, dry_run=call.dry_run)
        return dataclasses.replace(d, message=_explain(d, call.action)) if not d.allowed else d

    async def reserve(  # noqa: PLR0913, PLR0917 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: dict[str, str],
        reservation_id: str = "",
        ttl_seconds: int = 0,
        *,
        dry_run: bool = False,
    ) -> Decision:
        max_ttl = self.idempotency_ttl_ms // 1000
        if not 0 <= ttl_seconds <= max_ttl:
            msg = (
                f"ttl_seconds must be between 1 and {max_ttl} (the idempotency TTL), or 0 for "
                f"the default of {self.hold_ttl_ms // 1000}"
            )
            raise InvalidArgumentError(msg)
        ttl_ms = ttl_seconds * 1000 if ttl_seconds else self.hold_ttl_ms
        return await self.consume(
            account_id,
            action,
            quantity,
            attributes,
            reservation_id,
            dry_run=dry_run,
            hold_ttl_ms=ttl_ms,
        )

    async def settle(self, account_id: str, reservation_id: str, quantity: int) -> Settlement:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        check.check_quantity(quantity, allow_zero=True)
        keys = (*self.keys.account(account_id), self.keys.record(account_id, reservation_id))

        def build(plan: Plan | None) -> Args:
            args = self.plain_args(plan) if plan else []
            return [*self.header(account_id, plan, args), quantity, reservation_id]

        plan, reply = await self.run(self._scripts.settle, account_id, keys, build)
        self._hold_errors(reply, reservation_id)
        self._too_large(reply)
        plan = require_plan(plan)
        if reply[0] == b"REPLAY":
            plan, _, reply = self._recorded(plan, reply)
        debits, at = replies.movements(plan, reply, 8)
        debits = replies.net_by_pool(debits)
        reason = Reason(reply[5])
        return Settlement(
            reservation_id=reservation_id,
            cost=reply[1],
            meter=reply[7].decode(),
            held=reply[2],
            fully_charged=reply[3] == 1,
            shortfall=reply[4],
            reason=reason,
            debits=debits,
            balances=replies.remaining(plan, reply, at),
            replayed=reply[6] == 1,
            message=""
            if reply[3] == 1
            else (
                f"the actual cost exceeded the hold and the extra could not be charged: "
                f"{_REASON_TEXT.get(reason, reason.name.lower())}"
            ),
        )

    async def release(self, account_id: str, reservation_id: str) -> Release:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        keys = (*self.keys.account(account_id), self.keys.record(account_id, reservation_id))

        def build(plan: Plan | None) -> Args:
            args = self.plain_args(plan) if plan else []
            return [*self.header(account_id, plan, args), reservation_id]

        plan, reply = await self.run(self._scripts.release, account_id, keys, build)
        self._hold_errors(reply, reservation_id)
        plan = require_plan(plan)
        returns, at = replies.movements(plan, reply, 4)
        return Release(
            reservation_id,
            reply[1] == 1,
            reply[2],
            returns,
            replies.remaining(plan, reply, at),
            reply[3].decode(),
        )

    async def refund(
        self,
        account_id: str,
        request_id: str,
        refund_id: str,
        quantity: int = 0,
    ) -> Refund:
        check.check_id(account_id, "account_id")
        check.check_id(request_id, "request_id")
        check.check_id(refund_id, "refund_id")
        check.check_quantity(quantity, allow_zero=True)
        if refund_id == request_id:
            msg = "refund_id must differ from the request_id of the charge it refunds"
            raise InvalidArgumentError(msg)
        fp = _fingerprint(f"F|{request_id}|{quantity}")
        keys = (
            *self.keys.account(account_id),
            self.keys.record(account_id, refund_id),
            self.keys.record(account_id, request_id),
        )

        def build(plan: Plan | None) -> Args:
            args = self.plain_args(plan) if plan else []
            return [
                *self.header(account_id, plan, args),
                refund_id,
                fp,
                quantity,
                self.idempotency_ttl_ms,
                request_id,
            ]

        plan, reply = await self.run(self._scripts.refund, account_id, keys, build)
        code = reply[0]
        if code == b"IDEM_MISMATCH":
            msg = f"refund_id {refund_id!r} was already used for a different refund"
            raise FailedPreconditionError(msg)
        if code == b"NOT_FOUND":
            msg = (
                f"no charge with request_id {request_id!r} on account {account_id!r} "
                "(charges stay refundable for the idempotency TTL)"
            )
            raise NotFoundError(msg)
        if code == b"NOT_CHARGE":
            msg = f"{request_id!r} names a grant or a refund, not a charge; nothing to refund"
            raise FailedPreconditionError(msg)
        if code == b"NOT_SETTLED":
            msg = f"reservation {request_id!r} is not settled: settle or release it instead"
            raise FailedPreconditionError(msg)
        if code == b"EXCEEDS":
            left = reply[1]
            msg = (
                f"nothing is left to refund on {request_id!r}"
                if left == 0
                else f"only {format_micro(left)} units of the charge's meter ({left} micro-units) "
                f"are left to refund on {request_id!r}"
            )
            raise FailedPreconditionError(msg)
        self._too_large(reply)
        plan = require_plan(plan)
        if reply[0] == b"REPLAY":
            plan, _, reply = self._recorded(plan, reply)
        returns, at = replies.movements(plan, reply, 5)
        return Refund(
            refund_id,
            reply[1],
            reply[4].decode(),
            reply[2],
            returns,
            replies.remaining(plan, reply, at),
            reply[3] == 1,
        )

    async def balance(self, account_id: str) -> AccountState:
        """Every pool of the account, brought up to date (resets, expiries, expired holds)."""
        check.check_id(account_id, "account_id")

        def build(plan: Plan | None) -> Args:
            return self.header(account_id, plan, self.plain_args(plan) if plan else [])

        plan, reply = await self.run(
            self._scripts.balance, account_id, self.keys.account(account_id), build
        )
        return replies.account_state(account_id, plan, reply)

    # --- admin ---------------------------------------------------------------------------

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
        reply = await self.call(self._scripts.account, self.keys.account(account_id), args)
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
                self._check_cap(pool.id, cap, pool.cap_min, pool.cap_max)
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
        check.check_id(account_id, "account_id")
        check.check_id(grant_id, "grant_id")
        check.check_amount(amount)
        if expires_at < 0 or len(note) > 256 or "\x00" in note:  # noqa: PLR2004
            msg = "expires_at must be 0 (never) or a unix time in ms; note at most 256 characters"
            raise InvalidArgumentError(msg)
        fp = _fingerprint(f"G|{pool_id}|{amount}|{expires_at}")
        keys = (*self.keys.account(account_id), self.keys.record(account_id, grant_id))
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
            msg = f"expires_at is not in the future (the account's clock reads {reply[1]} ms)"
            raise InvalidArgumentError(msg)
        self._too_large(reply)
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
            msg = f"to_unix_ms is before the account's clock ({reply[1]} ms); it only moves forward"
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
    def _check_cap(pool_id: str, cap: int, low: int, high: int) -> None:
        if cap == -1 and high == -1:
            return
        if cap < 0 or cap < low or (high >= 0 and cap > high):
            top = "no upper limit (-1 removes the cap)" if high < 0 else format_micro(high)
            msg = (
                f"cap for {pool_id} must be between {format_micro(low)} and {top}, "
                f"in micro-units; got {cap}"
            )
            raise InvalidArgumentError(msg)

    def _recorded(self, plan: Plan, reply: list[Any]) -> tuple[Plan, str, list[Any]]:
        """A replayed answer, read with the plan it was given under (plans can change)."""
        then = self.catalog.plan(reply[1].decode()) or plan
        return then, reply[2].decode(), reply[3]

    @staticmethod
    def _too_large(reply: list[Any]) -> None:
        if reply[0] == b"TOO_LARGE":
            msg = "quantity x price is beyond the exact range (2^52 micro-units); split it"
            raise InvalidArgumentError(msg)

    @staticmethod
    def _hold_errors(reply: list[Any], reservation_id: str) -> None:
        code = reply[0]
        texts = {
            b"NOT_FOUND": (NotFoundError, "no reservation {id!r} on this account"),
            b"NOT_RESERVATION": (
                FailedPreconditionError,
                ("{id!r} is a charge, not a reservation: use Refund to give back credits")
                if reply[1:2] == [b"C"]
                else "{id!r} names a grant or a refund, not a reservation",
            ),
            b"RELEASED": (FailedPreconditionError, "reservation {id!r} was released"),
            b"SETTLED": (
                FailedPreconditionError,
                "reservation {id!r} is already settled: use Refund to give back credits",
            ),
            b"EXPIRED": (
                FailedPreconditionError,
                (
                    "reservation {id!r} expired and its credits went back to the pools; "
                    "reserve again"
                ),
            ),
        }
        if code in texts:
            cls, text = texts[code]
            raise cls(text.format(id=reservation_id))
