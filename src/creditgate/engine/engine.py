"""The engine: every quota and admin operation, each one script call on one account's slot."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    CreditgateError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from creditgate.domain.money import format_micro
from creditgate.domain.results import (
    Decision,
)
from creditgate.engine import replies
from creditgate.engine.core import Args, fingerprint, require_plan, too_large
from creditgate.engine.fastpath import command, encode
from creditgate.engine.returns import REASON_TEXT, ReturnsEngine

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from creditgate.domain.catalog import Plan

_MAX_CLOCK_STEP_S = 10 * 366 * 86_400
_MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01: far enough for any test, exact in Lua


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


def _explain(d: Decision, action: str) -> str:
    if d.allowed:
        return ""
    text = f"{action}: {REASON_TEXT.get(d.reason, d.reason.name.lower())}"
    if d.shortfall:
        text += f" (short by {format_micro(d.shortfall)} {d.meter})"
    if d.retry_at:
        text += f"; it clears by itself at unix ms {d.retry_at}"
    return text


class Engine(ReturnsEngine):
    """Typed operations over the Lua scripts. Validates every input before touching Redis.

    CheckAndConsume, its batch and Reserve are here; Settle, Release and Refund in
    ``ReturnsEngine``; account, grant and clock operations in ``AdminEngine``.
    """

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
        reserve = hold_ttl_ms is not None
        rid, unknown = check.check_consume(
            self.catalog.actions,
            account_id,
            action,
            quantity,
            attributes,
            request_id,
            reserve=reserve,
        )
        if unknown is not None:
            return unknown
        mode = "R" if reserve else "C"
        at = json.dumps(attributes, sort_keys=True, separators=(",", ":")) if attributes else ""
        fp = fingerprint(f"{mode}|{action}|{quantity}|{at}")
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

        keys = self.keys.account(account_id, rid)

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
        too_large(reply)
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
