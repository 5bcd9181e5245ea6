"""The consume and consume_batch scripts: CheckAndConsume, Reserve, and combined charges.

consume (consume.lua, its first branch, then consume_general.lua; both end in charge.lua):
  KEYS  [1..4] the account's keys (``KeySpace.account``), [5] this request's idempotency record
  ARGV  lib.lua's prefix (``common``), then mode 'C' charge / 'R' reserve, request id, request
        fingerprint, quantity, unit cost, per, action, attributes (JSON), dry run '1'/'0',
        idempotency TTL ms, hold TTL ms (mode 'R'), the action's meter
  reply {'OK', allowed 0/1, reason, cost, retry_at ms, now ms, replayed 0/1, shortfall, hold
        expires_at ms, n, n x (pool, amount, remaining, covered), remaining of each plan pool};
        {'REPLAY', plan then, meter, that reply}; {'IDEM_MISMATCH', mode}; {'TOO_LARGE'}
consume_batch (consume_batch.lua): charges of one account and request shape in one call
  KEYS  [1..4] the account's keys, then each request's idempotency record
  ARGV  consume's for the first request, then the other requests' ids
  reply consume's reply for each charge it answered, in order

The hot path sends these as RESP over the pipelined connection; the parts that depend only
on the plan and the request's shape are encoded once and cached.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from creditgate.domain import requests as check
from creditgate.domain import wording
from creditgate.domain.errors import FailedPreconditionError
from creditgate.domain.results import Decision, Reason
from creditgate.driver.wire import command, encode
from creditgate.engine.calls.common import (
    Args,
    Context,
    fingerprint,
    movements,
    reason_text,
    recorded,
    remaining,
    too_large,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from creditgate.domain.catalog import Plan

__all__ = ["ConsumeCall", "ConsumeCalls", "Shape", "decision"]

_SHAPE_CACHE_SIZE = 4096
_ACCOUNT_CACHE_SIZE = 100_000
# A consume call's fixed parts as RESP: ARGV[2..] up to the request id, and everything after
# it; then its argument count and the meter of the action's price (for the answer).
_Parts = tuple[bytes, bytes, int, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
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


class ConsumeCall:
    """One validated CheckAndConsume/Reserve, ready to run against any plan."""

    __slots__ = ("account_id", "calls", "rid", "script", "shape")

    def __init__(self, calls: ConsumeCalls, account_id: str, rid: str, shape: Shape) -> None:
        self.calls = calls
        self.account_id = account_id
        self.rid = rid
        self.shape = shape
        self.script = "consume"

    def keys(self) -> tuple[str, ...]:
        return self.calls.ctx.keys.account(self.account_id, self.rid)

    def argv(self, plan: Plan | None) -> Args:
        """ARGV for the redis-py path."""
        ctx = self.calls.ctx
        if plan is None:
            return ctx.header(self.account_id, None, [])
        pool_args, _, tail, _ = self.calls.args(plan, self.shape)
        return [*ctx.header(self.account_id, plan, pool_args), self.shape.mode, self.rid, *tail]

    def resp(self, plan: Plan) -> bytes:
        """The whole EVALSHA as RESP, for the pipelined connection."""
        return self.calls.resp(self, plan)

    def group(self, plan: Plan) -> tuple[tuple[object, ...] | None, tuple[ConsumeCall, Plan]]:
        """The pipelined connection's group and member for this call.

        Charges (not reservations, not dry runs) of one account, plan and request shape that
        queue up together may be sent as one consume_batch call (``ConsumeCalls.combine``).
        """
        shape = self.shape
        if shape.mode != "C" or shape.dry_run:
            return None, (self, plan)
        return (self.account_id, plan.key, shape.key), (self, plan)

    def result(self, plan: Plan | None, reply: list[Any]) -> Decision:
        """The script's answer as a Decision; IDEM_MISMATCH and TOO_LARGE raise."""
        assert plan is not None  # noqa: S101 - the runner returns the script's answer priced
        shape = self.shape
        if reply[0] == b"IDEM_MISMATCH":
            field = "reservation_id" if shape.reserve else "request_id"
            msg = (
                f"{field} {self.rid!r} was already used on this account for a different "
                "request; use a new id for a new request"
            )
            raise FailedPreconditionError(msg)
        too_large(reply)
        if reply[0] == b"REPLAY":
            plan, meter, reply = recorded(self.calls.ctx.catalog, plan, reply)
        else:
            meter = self.calls.parts(plan, shape)[3]
        d = decision(plan, reply, self.rid, meter, dry_run=shape.dry_run)
        if d.allowed:
            return d
        return dataclasses.replace(d, message=_explain(d, shape.action, plan))


def decision(
    plan: Plan, reply: list[Any], request_id: str, meter: str, *, dry_run: bool
) -> Decision:
    """An {'OK', ...} reply of consume as a Decision."""
    debits, at = movements(plan, reply, 9)
    return Decision(
        allowed=reply[1] == 1,
        reason=Reason(reply[2]),
        cost=reply[3],
        meter=meter,
        debits=debits,
        balances=remaining(plan, reply, at),
        request_id=request_id,
        retry_at=reply[4],
        replayed=reply[6] == 1,
        shortfall=reply[7],
        expires_at=reply[8],
        now=reply[5],
        dry_run=dry_run,
    )


def _explain(d: Decision, action: str, plan: Plan) -> str:
    text = f"{action}: {reason_text(d.reason, d.retry_at, plan)}"
    # A stopped or suspended account refuses the whole request whatever the pools hold: its
    # shortfall is the request's cost, which "short by" would misread.
    if d.shortfall and d.reason not in (Reason.ACCOUNT_STOPPED, Reason.ACCOUNT_SUSPENDED):
        text += f" (short by {wording.quantity(d.shortfall, d.meter)})"
    if d.retry_at:
        text += f"; it clears by itself at {wording.utc(d.retry_at)}"
    return text


class ConsumeCalls:
    """Makes consume calls: validates requests into shapes, encodes calls, combines charges.

    Holds the hot path's caches: request shapes, the RESP of their fixed parts per plan, and
    each account's keys; all bounded, all rebuilt on a miss.
    """

    def __init__(self, ctx: Context, consume_sha: str, batch_sha: str, batch_source: str) -> None:
        self.ctx = ctx
        # The pipelined connection sends this first when consume_batch is missing (after a
        # Redis restart).
        self.load = command(3, encode(["SCRIPT", "LOAD", batch_source]))
        self._shapes: dict[tuple[object, ...], Shape] = {}
        self._parts: dict[tuple[object, ...], _Parts] = {}
        self._heads: dict[str, tuple[bytes, str]] = {}
        self._consume_head = encode(["EVALSHA", consume_sha, 5])
        self._batch_head = encode(["EVALSHA", batch_sha])

    def shape(
        self,
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        *,
        dry_run: bool,
        hold_ttl_ms: int | None,
    ) -> Shape:
        """The request's shape, validated the first time it is seen."""
        key = (action, quantity, dry_run, hold_ttl_ms, frozenset(attributes.items()))
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        attrs = dict(attributes)
        known = check.check_consume_shape(self.ctx.catalog.actions, action, quantity, attrs)
        mode = "C" if hold_ttl_ms is None else "R"
        at = json.dumps(attrs, sort_keys=True, separators=(",", ":")) if attrs else ""
        fp = fingerprint(f"{mode}|{action}|{quantity}|{at}")
        shape = Shape(key, mode, action, quantity, attrs, at, fp, dry_run, hold_ttl_ms or 0, known)
        if len(self._shapes) >= _SHAPE_CACHE_SIZE:
            self._shapes.clear()
            self._parts.clear()
        self._shapes[key] = shape
        return shape

    def call(self, account_id: str, rid: str, shape: Shape) -> ConsumeCall:
        return ConsumeCall(self, account_id, rid, shape)

    def args(self, plan: Plan, shape: Shape) -> tuple[Args, bytes, Args, str]:
        """Pool descriptors (as arguments, and as RESP from the plan id on), tail, meter.

        The tail is the consume script's ARGV after the request id.
        """
        ctx = self.ctx
        pool_args, price, static = ctx.priced(plan, shape.action, shape.attributes)
        uc, per, meter = (price.unit_cost, price.per, price.meter) if price else (0, 1, "")
        tail: Args = [
            shape.fp,
            shape.quantity,
            uc,
            per,
            shape.action,
            shape.at,
            "1" if shape.dry_run else "0",
            ctx.idempotency_ttl_ms,
            shape.hold_ttl_ms,
            meter,
        ]
        return pool_args, static, tail, meter

    def parts(self, plan: Plan, shape: Shape) -> _Parts:
        """The RESP of the consume call around the ids, its argument count, the meter."""
        key = (plan.key, shape.key)
        parts = self._parts.get(key)
        if parts is None:
            pool_args, static, tail, meter = self.args(plan, shape)
            # EVALSHA sha 5 keys(5) account_id [plan clock n pools...] mode rid tail...
            count = 3 + 5 + 1 + 3 + len(pool_args) + 2 + len(tail)
            parts = (static + encode([shape.mode]), encode(tail), count, meter)
            self._parts[key] = parts
        return parts

    def _head(self, account_id: str) -> tuple[bytes, str]:
        """An account's four shared keys as RESP, and its idempotency records' key prefix."""
        head = self._heads.get(account_id)
        if head is None:
            keys = self.ctx.keys
            head = (encode(keys.account(account_id)), keys.record_prefix(account_id))
            if len(self._heads) >= _ACCOUNT_CACHE_SIZE:
                self._heads.clear()
            self._heads[account_id] = head
        return head

    def resp(self, call: ConsumeCall, plan: Plan) -> bytes:
        """The whole EVALSHA as RESP, from cached parts and the two ids."""
        static, tail, count, _ = self.parts(plan, call.shape)
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
        """The pipelined connection's Combiner: queued charges as one consume_batch call.

        Each member is a charge's (call, plan), as ``ConsumeCall.group`` gives them.
        """
        calls: list[ConsumeCall] = [call for call, _ in members]
        plan: Plan = members[0][1]
        first = calls[0]
        static, tail, count, _ = self.parts(plan, first.shape)
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
