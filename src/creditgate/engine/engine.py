"""The engine: every quota and admin operation, each one script call on one account's slot."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, TypeVar

from creditgate.domain import requests as check
from creditgate.domain import wording
from creditgate.domain.errors import (
    CreditgateError,
    FailedPreconditionError,
    UnavailableError,
)
from creditgate.domain.results import Decision, Reason
from creditgate.engine import replies
from creditgate.engine.core import Args, fingerprint, require_plan, too_large
from creditgate.engine.failures import FAILURES, failure
from creditgate.engine.fastpath import encode
from creditgate.engine.returns import REASON_TEXT, ReturnsEngine

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from creditgate.domain.catalog import Plan

_MAX_CLOCK_STEP_S = 10 * 366 * 86_400
_MAX_CLOCK_MS = 32_503_680_000_000  # 3000-01-01: far enough for any test, exact in Lua


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    """What a request's action, quantity, attributes and flags decide: validated once, cached.

    Requests of the same shape differ only in account and request id; everything else in their
    script call (fingerprint, attribute JSON, pool descriptors, price) comes from this.
    """

    key: tuple[object, ...]
    mode: str  # 'C' charge, 'R' reserve
    action: str
    quantity: int
    attributes: dict[str, str]
    at: str  # the attributes as JSON, for the event
    fp: str  # the fingerprint an idempotency record keeps
    dry_run: bool
    hold_ttl_ms: int  # 0 for a charge
    known: bool  # the price book has the action

    @property
    def reserve(self) -> bool:
        return self.mode == "R"


class _Consume:
    """One validated CheckAndConsume/Reserve, ready to run against any plan."""

    __slots__ = ("account_id", "rid", "shape")

    def __init__(self, account_id: str, rid: str, shape: _Shape) -> None:
        self.account_id = account_id
        self.rid = rid
        self.shape = shape


# A consume call's fixed parts as RESP: ARGV[2..] up to the request id, and everything after
# it; then its argument count and the meter of the action's price (for the answer).
_Parts = tuple[bytes, bytes, int, str]
_SHAPE_CACHE_SIZE = 4096
T = TypeVar("T")
_ACCOUNT_CACHE_SIZE = 100_000


def _group(call: _Consume, plan: Plan) -> tuple[tuple[object, ...] | None, tuple[_Consume, Plan]]:
    """FastRedis's group and member for a consume call.

    Charges (not reservations, not dry runs) of one account, plan and request shape that queue
    up together may be sent as one consume_batch call (``Engine.combine``).
    """
    shape = call.shape
    if shape.mode != "C" or shape.dry_run:
        return None, (call, plan)
    return (call.account_id, plan.id, shape.key), (call, plan)


def _domain_decision(
    plan: Plan,
    reply: list[Any],
    request_id: str,
    meter: str,
    dry_run: bool,  # noqa: FBT001 - consume_as's positional callback
) -> Decision:
    return replies.decision(plan, reply, request_id, meter, dry_run=dry_run)


def _as_is(d: Decision) -> Decision:
    return d


def _explain(d: Decision, action: str) -> str:
    if d.allowed:
        return ""
    text = f"{action}: {REASON_TEXT.get(d.reason, d.reason.name.lower())}"
    if d.shortfall:
        text += f" (short by {wording.quantity(d.shortfall, d.meter)})"
    if d.retry_at:
        text += f"; it clears by itself at {wording.utc(d.retry_at)}"
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
        return await self.consume_as(
            _domain_decision,
            _as_is,
            account_id,
            action,
            quantity,
            attributes,
            request_id,
            dry_run=dry_run,
            hold_ttl_ms=hold_ttl_ms,
        )

    async def consume_as(  # noqa: PLR0913, PLR0917 - two callbacks, then the request message
        self,
        present: Callable[[Plan, list[Any], str, str, bool], T],
        otherwise: Callable[[Decision], T],
        account_id: str,
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        request_id: str = "",
        *,
        dry_run: bool = False,
        hold_ttl_ms: int | None = None,
    ) -> T:
        """CheckAndConsume (or Reserve) with the answer in the caller's form.

        An allowed answer goes straight from the script's reply to ``present(plan, reply,
        request_id, meter, dry_run)``, whose reply layout is that of ``replies.decision``;
        every other answer is made a Decision first and handed to ``otherwise``. The gRPC hot
        path presents protobuf this way; ``consume`` presents the domain Decision.
        """
        call = self._prepare(
            account_id,
            action,
            quantity,
            attributes,
            request_id,
            dry_run=dry_run,
            hold_ttl_ms=hold_ttl_ms,
        )
        if isinstance(call, Decision):  # an unknown action, on an account that must exist
            await self.require_account(account_id)
            return otherwise(call)
        plan, reply = await self._consume_reply(call)
        if reply[0] == b"OK" and reply[1] == 1:
            return present(plan, reply, call.rid, self._parts(plan, call.shape)[3], dry_run)
        return otherwise(self._decide(call, plan, reply))

    async def _consume_reply(self, call: _Consume) -> tuple[Plan, list[Any]]:
        """The consume script's reply: over the pipelined connection when the plan is known."""
        if self.fast is not None:
            plan_id = self._plans.get(call.account_id)
            plan = self.catalog.plan(plan_id) if plan_id else None
            if plan is not None:
                reply = await self._fast(call, plan)
                if reply is not None:
                    return plan, reply
        plan, reply = await self.run(
            self._scripts.consume,
            call.account_id,
            self._keys(call),
            lambda plan: self._build(call, plan),
        )
        return require_plan(plan), reply

    async def _fast(self, call: _Consume, plan: Plan) -> list[Any] | None:
        """Run the consume script over the pipelined connection.

        None sends the call down the regular path: an unknown plan or account, NOSCRIPT after a
        Redis restart, any other error reply.
        """
        assert self.fast is not None  # noqa: S101 - checked by the caller
        try:
            reply = await self.fast.call(self._encoded(call, plan), *_group(call, plan))
        except FAILURES as exc:
            raise failure(exc, sent=False) from exc
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
            elif isinstance(slot, Decision) and slot.reason is Reason.UNKNOWN_ACTION:
                out[i] = await self._account_or_error(requests[i][0], slot)
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
            try:
                return await self.fast.call_many(
                    [self._encoded(c, p) for _, c, p in queued],
                    [_group(c, p) for _, c, p in queued],
                )
            except FAILURES as exc:
                raise failure(exc, sent=False) from exc
        pipe = self.redis.pipeline(transaction=False)
        for _, call, plan in queued:
            await self._scripts.consume(
                keys=self._keys(call), args=self._build(call, plan), client=pipe
            )
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

    async def _account_or_error(self, account_id: str, d: Decision) -> Decision | CreditgateError:
        """An unknown action's denial, or NOT_FOUND when the account does not exist either."""
        try:
            await self.require_account(account_id)
        except UnavailableError:
            raise  # Redis is gone for the whole batch
        except CreditgateError as exc:
            return exc
        return d

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
        attributes: Mapping[str, str],
        request_id: str,
        *,
        dry_run: bool,
        hold_ttl_ms: int | None,
    ) -> _Consume | Decision:
        """Validate a CheckAndConsume/Reserve; an unknown action is answered here (a denial).

        The checks run in the order of the message's fields, so the first wrong field is the
        one reported. A shape seen before skips the checks it already passed.
        """
        reserve = hold_ttl_ms is not None
        key = (action, quantity, dry_run, hold_ttl_ms, frozenset(attributes.items()))
        shape = self._shapes.get(key)
        check.check_id(account_id, "account_id")
        field = "reservation_id" if reserve else "request_id"
        rid = self.check_request_id(request_id, field, dry_run=dry_run)
        if shape is None:
            shape = self._shape(key, action, quantity, attributes, dry_run, hold_ttl_ms)
        if not shape.known:
            return check.unknown_action(action, rid)
        return _Consume(account_id, rid, shape)

    def _shape(  # noqa: PLR0913, PLR0917 - the parts of the cache key
        self,
        key: tuple[object, ...],
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        dry_run: bool,  # noqa: FBT001
        hold_ttl_ms: int | None,
    ) -> _Shape:
        attributes = dict(attributes)
        known = check.check_consume_shape(self.catalog.actions, action, quantity, attributes)
        mode = "C" if hold_ttl_ms is None else "R"
        at = json.dumps(attributes, sort_keys=True, separators=(",", ":")) if attributes else ""
        shape = _Shape(
            key,
            mode,
            action,
            quantity,
            attributes,
            at,
            fingerprint(f"{mode}|{action}|{quantity}|{at}"),
            dry_run,
            hold_ttl_ms or 0,
            known,
        )
        if len(self._shapes) >= _SHAPE_CACHE_SIZE:
            self._shapes.clear()
            self._consume_parts.clear()
        self._shapes[key] = shape
        return shape

    def _keys(self, call: _Consume) -> tuple[str, ...]:
        return self.keys.account(call.account_id, call.rid)

    def _build(self, call: _Consume, plan: Plan | None) -> Args:
        """ARGV of the consume script for the redis-py path."""
        if plan is None:
            return self.header(call.account_id, None, [])
        pool_args, _, tail, _ = self._args(plan, call.shape)
        return [*self.header(call.account_id, plan, pool_args), call.shape.mode, call.rid, *tail]

    def _args(self, plan: Plan, shape: _Shape) -> tuple[Args, bytes, Args, str]:
        """Pool descriptors (as arguments, and as RESP from the plan id on), tail, meter.

        The tail is the consume script's ARGV after the request id.
        """
        pool_args, price, static = self.consume_args(plan, shape.action, shape.attributes)
        uc, per, meter = (price.unit_cost, price.per, price.meter) if price else (0, 1, "")
        tail: Args = [
            shape.fp,
            shape.quantity,
            uc,
            per,
            shape.action,
            shape.at,
            "1" if shape.dry_run else "0",
            self.idempotency_ttl_ms,
            shape.hold_ttl_ms,
            meter,
        ]
        return pool_args, static, tail, meter

    def _parts(self, plan: Plan, shape: _Shape) -> _Parts:
        """The RESP of the consume call around the ids, its argument count, the meter."""
        key = (plan.id, shape.key)
        parts = self._consume_parts.get(key)
        if parts is None:
            pool_args, static, tail, meter = self._args(plan, shape)
            # EVALSHA sha 5 keys(5) account_id [plan clock n pools...] mode rid tail...
            count = 3 + 5 + 1 + 3 + len(pool_args) + 2 + len(tail)
            parts = (static + encode([shape.mode]), encode(tail), count, meter)
            self._consume_parts[key] = parts
        return parts

    def _head(self, account_id: str) -> tuple[bytes, str]:
        """An account's four shared keys as RESP, and its idempotency records' key prefix."""
        head = self._account_heads.get(account_id)
        if head is None:
            keys = self.keys.account(account_id)
            head = (encode(keys), self.keys.record_prefix(account_id))
            if len(self._account_heads) >= _ACCOUNT_CACHE_SIZE:
                self._account_heads.clear()
            self._account_heads[account_id] = head
        return head

    def _encoded(self, call: _Consume, plan: Plan) -> bytes:
        """The whole EVALSHA as RESP, from cached parts and the two ids."""
        static, tail, count, _ = self._parts(plan, call.shape)
        account_id = call.account_id
        keys, prefix = self._head(account_id)
        # Ids are ASCII (checked), so their length in characters is their length in bytes.
        record = prefix + call.rid
        return b"*%d\r\n%s%s$%d\r\n%s\r\n$%d\r\n%s\r\n%s$%d\r\n%s\r\n%s" % (
            count,
            self._consume_head,
            keys,
            len(record),
            record.encode(),
            len(account_id),
            account_id.encode(),
            static,
            len(call.rid),
            call.rid.encode(),
            tail,
        )

    def combine(self, members: Sequence[Any]) -> bytes:
        """Charges of one account and request shape that queued up together, as one call.

        Each member is a charge's (call, plan), as ``_fast`` gives them to FastRedis.
        """
        return self._encoded_batch([call for call, _ in members], members[0][1])

    def _encoded_batch(self, calls: Sequence[_Consume], plan: Plan) -> bytes:
        """One consume_batch EVALSHA for charges of one account and shape (consume_batch.lua).

        Its KEYS are consume's four shared keys and each request's record; its ARGV consume's,
        for the first request, then the other requests' ids.
        """
        first = calls[0]
        static, tail, count, _ = self._parts(plan, first.shape)
        account_id = first.account_id
        keys, prefix = self._head(account_id)
        n = len(calls)
        records = b"".join(
            b"$%d\r\n%s\r\n" % (len(prefix) + len(c.rid), (prefix + c.rid).encode()) for c in calls
        )
        rids = b"".join(b"$%d\r\n%s\r\n" % (len(c.rid), c.rid.encode()) for c in calls[1:])
        numkeys = b"%d" % (4 + n)
        return b"*%d\r\n%s$%d\r\n%s\r\n%s%s$%d\r\n%s\r\n%s$%d\r\n%s\r\n%s%s" % (
            count + 2 * (n - 1),
            self._batch_head,
            len(numkeys),
            numkeys,
            keys,
            records,
            len(account_id),
            account_id.encode(),
            static,
            len(first.rid),
            first.rid.encode(),
            tail,
            rids,
        )

    def _decide(self, call: _Consume, plan: Plan, reply: list[Any]) -> Decision:
        shape = call.shape
        if reply[0] == b"IDEM_MISMATCH":
            field = "reservation_id" if shape.reserve else "request_id"
            msg = (
                f"{field} {call.rid!r} was already used on this account for a different "
                "request; use a new id for a new request"
            )
            raise FailedPreconditionError(msg)
        too_large(reply)
        if reply[0] == b"REPLAY":
            plan, meter, reply = self._recorded(plan, reply)
        else:
            meter = self._parts(plan, shape)[3]
        d = replies.decision(plan, reply, call.rid, meter, dry_run=shape.dry_run)
        return dataclasses.replace(d, message=_explain(d, shape.action)) if not d.allowed else d

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
        ttl_ms = check.hold_ttl_ms(ttl_seconds, self.idempotency_ttl_ms, self.hold_ttl_ms)
        return await self.consume(
            account_id,
            action,
            quantity,
            attributes,
            reservation_id,
            dry_run=dry_run,
            hold_ttl_ms=ttl_ms,
        )
