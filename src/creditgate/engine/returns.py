"""Credits going back: Settle and Release of holds, and Refund of charges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain import requests as check
from creditgate.engine.calls.returns import RefundCall, ReleaseCall, SettleCall

if TYPE_CHECKING:
    from creditgate.domain.results import Refund, Release, Settlement
    from creditgate.engine.calls.common import Context
    from creditgate.engine.runner import Runner

__all__ = ["ReturnOps"]


class ReturnOps:
    """Settle, Release and Refund: each validated, then one script call on the account's slot."""

    def __init__(self, runner: Runner, ctx: Context) -> None:
        self.runner = runner
        self.ctx = ctx

    async def settle(self, account_id: str, reservation_id: str, quantity: int) -> Settlement:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        check.check_quantity(quantity, allow_zero=True)
        return await self.runner.call(SettleCall(self.ctx, account_id, reservation_id, quantity))

    async def release(self, account_id: str, reservation_id: str) -> Release:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        return await self.runner.call(ReleaseCall(self.ctx, account_id, reservation_id))

    async def refund(
        self, account_id: str, request_id: str, refund_id: str, quantity: int = 0
    ) -> Refund:
        check.check_refund(account_id, request_id, refund_id, quantity)
        call = RefundCall(self.ctx, account_id, request_id, refund_id, quantity)
        return await self.runner.call(call)
