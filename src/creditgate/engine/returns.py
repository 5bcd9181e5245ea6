"""Credits going back: Settle and Release of holds, and Refund of charges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    FailedPreconditionError,
    NotFoundError,
)
from creditgate.domain.money import format_micro
from creditgate.domain.results import Reason, Refund, Release, Settlement, net_by_pool
from creditgate.engine import replies
from creditgate.engine.admin import AdminEngine
from creditgate.engine.core import Args, fingerprint, require_plan, too_large

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan

REASON_TEXT = {
    Reason.INSUFFICIENT_CREDITS: "not enough credits in the pools that accept this action",
    Reason.SPEND_CAP_REACHED: "the spend cap of the current period would be exceeded",
    Reason.ACCOUNT_SUSPENDED: "the account is suspended",
    Reason.ACCOUNT_STOPPED: "the account is stopped until its renewal (a cap was lowered below "
    "this period's spend)",
    Reason.NOT_ENTITLED: "no pool of the plan accepts this action with these attributes",
}


class ReturnsEngine(AdminEngine):
    """Settle, Release and Refund: each one script call on the account's slot."""

    async def settle(self, account_id: str, reservation_id: str, quantity: int) -> Settlement:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        check.check_quantity(quantity, allow_zero=True)
        keys = self.keys.account(account_id, reservation_id)

        def build(plan: Plan | None) -> Args:
            args = self.plain_args(plan) if plan else []
            return [*self.header(account_id, plan, args), quantity, reservation_id]

        plan, reply = await self.run(self._scripts.settle, account_id, keys, build)
        self._hold_errors(reply, reservation_id)
        too_large(reply)
        plan = require_plan(plan)
        if reply[0] == b"REPLAY":
            plan, _, reply = self._recorded(plan, reply)
        debits, at = replies.movements(plan, reply, 8)
        debits = net_by_pool(debits)
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
                f"{REASON_TEXT.get(reason, reason.name.lower())}"
            ),
        )

    async def release(self, account_id: str, reservation_id: str) -> Release:
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        keys = self.keys.account(account_id, reservation_id)

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
        check.check_refund(account_id, request_id, refund_id, quantity)
        fp = fingerprint(f"F|{request_id}|{quantity}")
        keys = (*self.keys.account(account_id, refund_id, request_id),)

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
        too_large(reply)
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

    # --- helpers -------------------------------------------------------------------------
    def _recorded(self, plan: Plan, reply: list[Any]) -> tuple[Plan, str, list[Any]]:
        """A replayed answer, read with the plan it was given under (plans can change)."""
        then = self.catalog.plan(reply[1].decode()) or plan
        return then, reply[2].decode(), reply[3]

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
