"""creditgate.v1.CreditsService: the credits view, history and usage, read from the ledger.

A translation of ``creditgate.credits.Credits`` onto the wire. The guard checks ``view_credits``
(owner, admin, super_admin) and the token's accounts before a method runs. A server without a
ledger answers FAILED_PRECONDITION; a ledger outage UNAVAILABLE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.domain.errors import FailedPreconditionError
from creditgate.transport import convert
from creditgate.transport.errors import boundary
from creditgate.v1 import credits_pb2 as pb

if TYPE_CHECKING:
    from creditgate.credits import Credits, Lag, Movement

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _lag(lag: Lag) -> pb.LedgerLag:
    return pb.LedgerLag(
        ledger_unix_ms=lag.ledger_ms,
        lag_ms=lag.lag_ms,
        account_unix_ms=lag.account_ms,
        caught_up=lag.caught_up,
    )


def _movement(m: Movement) -> pb.Movement:
    return pb.Movement(
        type=m.type,
        pool_id=m.pool,
        unit=m.unit,
        amount=m.amount,
        balance=m.balance,
        at_unix_ms=m.time_ms,
        request_id=m.request_id,
        action=m.action,
        event_id=m.event_id,
    )


class CreditsService:
    """``view`` None: the server has no ledger."""

    def __init__(self, view: Credits | None) -> None:
        self.view = view

    def _api(self) -> Credits:
        if self.view is None:
            msg = (
                "the credits view reads the ledger: set CREDITGATE_LEDGER_URL "
                "(sqlite:///path or postgresql://...)"
            )
            raise FailedPreconditionError(msg)
        return self.view

    @boundary
    async def GetCredits(
        self, request: pb.GetCreditsRequest, context: Ctx
    ) -> pb.GetCreditsResponse:
        v = await self._api().credits(request.account_id, request.pool_id)
        return pb.GetCreditsResponse(
            account_id=v.account,
            plan_id=v.plan,
            pool_id=v.pool,
            unit=v.unit,
            balance=v.balance,
            low_balance=v.low_balance,
            low_balance_threshold=v.threshold,
            lifetime_added=v.lifetime_added,
            lifetime_spent=v.lifetime_spent,
            auto_top_up=convert.auto_topup(v.auto_top_up),
            recent=[_movement(m) for m in v.recent],
            more_history=v.more_history,
            ledger=_lag(v.lag),
        )

    @boundary
    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: Ctx
    ) -> pb.ListTransactionsResponse:
        page = await self._api().transactions(
            request.account_id, request.pool_id, request.limit, request.cursor
        )
        return pb.ListTransactionsResponse(
            transactions=[_movement(m) for m in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
            ledger=_lag(page.lag),
        )

    @boundary
    async def GetUsage(self, request: pb.GetUsageRequest, context: Ctx) -> pb.GetUsageResponse:
        u = await self._api().usage(
            request.account_id, request.month, request.from_day, request.to_day
        )
        return pb.GetUsageResponse(
            account_id=u.account,
            plan_id=u.plan,
            from_unix_ms=u.since_ms,
            until_unix_ms=u.until_ms,
            actions=[
                pb.ActionUsage(
                    action=r.action, meter=r.meter, pool_id=r.pool, unit=r.unit, amount=r.amount
                )
                for r in u.actions
            ],
            pools=[
                pb.PoolUsage(
                    pool_id=p.pool, kind=p.kind, unit=p.unit, used=p.used, remaining=p.remaining
                )
                for p in u.pools
            ],
            ledger=_lag(u.lag),
        )
