"""creditgate.v1.QuotaService: the hot path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.domain.errors import (
    CreditgateError,
    InvalidArgumentError,
    OutcomeUnknownError,
    UnavailableError,
)
from creditgate.domain.requests import is_valid_id
from creditgate.domain.results import Reason
from creditgate.transport import convert, limits, metrics
from creditgate.transport.errors import bind_request_id, boundary, status_of
from creditgate.transport.fail_policy import tell_policy
from creditgate.transport.guard import redact_balance, redact_unmoved
from creditgate.v1 import quota_pb2

if TYPE_CHECKING:
    from creditgate.domain.results import Decision
    from creditgate.engine import Engine

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH = limits.MAX_BATCH
_ALLOWED = metrics.decided_counter("consume", Reason.ALLOWED)


def _answer(d: Decision) -> quota_pb2.Decision:
    if d.allowed:
        _ALLOWED.inc()
    else:
        metrics.decided("consume", d.reason)
    return convert.decision(d)


def bound_id(engine: Engine, given: str, context: Ctx, *, dry_run: bool = False) -> str:
    """The charge's id (generated when empty), returned to the caller on every outcome."""
    rid = engine.request_id(given, dry_run=dry_run)
    if is_valid_id(rid):
        bind_request_id(context, rid)
    return rid


class QuotaService:
    """Each method validates, makes one engine call, and converts the answer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _bound_id(self, given: str, context: Ctx, *, dry_run: bool = False) -> str:
        return bound_id(self.engine, given, context, dry_run=dry_run)

    @boundary
    async def CheckAndConsume(
        self,
        request: quota_pb2.CheckAndConsumeRequest,
        context: Ctx,
    ) -> quota_pb2.Decision:
        rid = self._bound_id(request.request_id, context, dry_run=request.dry_run)
        try:
            d = await self.engine.consume(
                request.account_id,
                request.action,
                request.quantity,
                request.attributes,
                rid,
                dry_run=request.dry_run,
            )
        except UnavailableError:
            tell_policy(context, self.engine.catalog, "consume", request.action)
            raise
        return redact_unmoved(_answer(d))

    @boundary
    async def CheckAndConsumeBatch(
        self, request: quota_pb2.CheckAndConsumeBatchRequest, context: Ctx
    ) -> quota_pb2.CheckAndConsumeBatchResponse:
        """Items sent without request_id run as ``<batch id>-<index>`` (0-based, in order).

        The batch id is returned like a CheckAndConsume's id (trailing metadata, and ErrorInfo
        on an error), so a batch whose outcome is unknown can be retried with the same ids; the
        DEADLINE_EXCEEDED message spells them out.
        """
        if len(request.requests) > MAX_BATCH:
            msg = f"a batch holds at most {MAX_BATCH} requests, got {len(request.requests)}"
            raise InvalidArgumentError(msg)
        batch_id = self._bound_id("", context)
        rids = [
            r.request_id or (f"{batch_id}-{i}" if batch_id else "")
            for i, r in enumerate(request.requests)
        ]
        decisions = []
        try:
            results = await self.engine.consume_many(
                [
                    (r.account_id, r.action, r.quantity, dict(r.attributes), rid, r.dry_run)
                    for r, rid in zip(request.requests, rids, strict=True)
                ]
            )
        except OutcomeUnknownError as exc:
            if batch_id and not all(r.request_id for r in request.requests):
                msg = (
                    f"{exc}; items sent without one ran as {batch_id}-<index> (0-based position"
                    " in requests): retry the batch with those ids set"
                )
                raise OutcomeUnknownError(msg) from exc
            raise
        for result, rid in zip(results, rids, strict=True):
            if isinstance(result, CreditgateError):
                code, message = status_of(result)
                decisions.append(
                    quota_pb2.Decision(
                        allowed=False,
                        reason=quota_pb2.REASON_UNSPECIFIED,
                        message=f"{code.name}: {message}",
                        request_id=rid,
                    )
                )
            else:
                metrics.decided("batch", result.reason)
                decisions.append(redact_unmoved(convert.decision(result)))
        return quota_pb2.CheckAndConsumeBatchResponse(decisions=decisions)

    @boundary
    async def Reserve(
        self,
        request: quota_pb2.ReserveRequest,
        context: Ctx,
    ) -> quota_pb2.Decision:
        try:
            d = await self.engine.reserve(
                request.account_id,
                request.action,
                request.quantity,
                dict(request.attributes),
                self._bound_id(request.reservation_id, context, dry_run=request.dry_run),
                request.ttl_seconds,
                dry_run=request.dry_run,
            )
        except UnavailableError:
            tell_policy(context, self.engine.catalog, "reserve", request.action)
            raise
        metrics.decided("reserve", d.reason)
        return redact_unmoved(convert.decision(d))

    @boundary
    async def Settle(
        self,
        request: quota_pb2.SettleRequest,
        context: Ctx,
    ) -> quota_pb2.SettleResponse:
        return redact_unmoved(
            convert.settlement(
                await self.engine.settle(
                    request.account_id, request.reservation_id, request.quantity
                )
            )
        )

    @boundary
    async def Release(
        self,
        request: quota_pb2.ReleaseRequest,
        context: Ctx,
    ) -> quota_pb2.ReleaseResponse:
        return redact_unmoved(
            convert.release(await self.engine.release(request.account_id, request.reservation_id))
        )

    @boundary
    async def Refund(
        self,
        request: quota_pb2.RefundRequest,
        context: Ctx,
    ) -> quota_pb2.RefundResponse:
        return redact_unmoved(
            convert.refund(
                await self.engine.refund(
                    request.account_id,
                    request.request_id,
                    request.refund_id,
                    quantity=request.quantity,
                )
            )
        )

    @boundary
    async def GetBalance(
        self,
        request: quota_pb2.GetBalanceRequest,
        context: Ctx,
    ) -> quota_pb2.GetBalanceResponse:
        return redact_balance(convert.balance(await self.engine.balance(request.account_id)))
