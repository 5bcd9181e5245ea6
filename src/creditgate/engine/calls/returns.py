"""The settle, release and refund scripts: credits going back.

KEYS of each: [1..4] the account's keys, [5] the hold's or refund's idempotency record, and for
refund [6] the refunded charge's record. ARGV: lib.lua's prefix (``common``), then:
  settle   quantity, reservation id
           reply {'OK', cost, held, fully charged 0/1, shortfall, reason, replayed 0/1, meter,
           n, n x movement, remaining of each pool}, or {'REPLAY', plan, meter, that reply}
  release  reservation id
           reply {'OK', released 0/1, returned, meter, n, n x movement, remaining of each pool}
  refund   refund id, fingerprint, quantity, idempotency TTL ms, request id
           reply {'OK', refunded, refundable, replayed 0/1, meter, n, n x movement, remaining}
Errors: settle and release {'NOT_FOUND'}, {'NOT_RESERVATION', mode}, {'RELEASED'},
{'SETTLED'}, {'EXPIRED'}; refund {'IDEM_MISMATCH'}, {'NOT_FOUND'}, {'NOT_CHARGE'},
{'NOT_SETTLED'}, {'EXCEEDS', left}; any {'TOO_LARGE'}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from creditgate.domain.errors import FailedPreconditionError, NotFoundError
from creditgate.domain.money import format_micro
from creditgate.domain.results import Reason, Refund, Release, Settlement, net_by_pool
from creditgate.engine.calls.common import (
    Args,
    Context,
    fingerprint,
    movements,
    reason_text,
    recorded,
    remaining,
    require_plan,
    too_large,
)

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan

__all__ = ["RefundCall", "ReleaseCall", "SettleCall"]


@dataclass(frozen=True, slots=True)
class SettleCall:
    ctx: Context
    account_id: str
    reservation_id: str
    quantity: int
    script: str = "settle"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id, self.reservation_id)

    def argv(self, plan: Plan | None) -> Args:
        return [*self.ctx.prefix(self.account_id, plan), self.quantity, self.reservation_id]

    def result(self, plan: Plan | None, reply: list[Any]) -> Settlement:
        hold_errors(reply, self.reservation_id)
        too_large(reply)
        plan = require_plan(plan)
        if reply[0] == b"REPLAY":
            plan, _, reply = recorded(self.ctx.catalog, plan, reply)
        debits, at = movements(plan, reply, 8)
        reason = Reason(reply[5])
        full = reply[3] == 1
        return Settlement(
            reservation_id=self.reservation_id,
            cost=reply[1],
            meter=reply[7].decode(),
            held=reply[2],
            fully_charged=full,
            shortfall=reply[4],
            reason=reason,
            debits=net_by_pool(debits),
            balances=remaining(plan, reply, at),
            replayed=reply[6] == 1,
            message=""
            if full
            else (
                f"the actual cost exceeded the hold and the extra could not be charged: "
                f"{reason_text(reason)}"
            ),
        )


@dataclass(frozen=True, slots=True)
class ReleaseCall:
    ctx: Context
    account_id: str
    reservation_id: str
    script: str = "release"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id, self.reservation_id)

    def argv(self, plan: Plan | None) -> Args:
        return [*self.ctx.prefix(self.account_id, plan), self.reservation_id]

    def result(self, plan: Plan | None, reply: list[Any]) -> Release:
        hold_errors(reply, self.reservation_id)
        plan = require_plan(plan)
        returns, at = movements(plan, reply, 4)
        return Release(
            self.reservation_id,
            reply[1] == 1,
            reply[2],
            returns,
            remaining(plan, reply, at),
            reply[3].decode(),
        )


@dataclass(frozen=True, slots=True)
class RefundCall:
    ctx: Context
    account_id: str
    request_id: str
    refund_id: str
    quantity: int
    script: str = "refund"

    def keys(self) -> tuple[str, ...]:
        return self.ctx.keys.account(self.account_id, self.refund_id, self.request_id)

    def argv(self, plan: Plan | None) -> Args:
        return [
            *self.ctx.prefix(self.account_id, plan),
            self.refund_id,
            fingerprint(f"F|{self.request_id}|{self.quantity}"),
            self.quantity,
            self.ctx.idempotency_ttl_ms,
            self.request_id,
        ]

    def result(self, plan: Plan | None, reply: list[Any]) -> Refund:
        self._errors(reply)
        too_large(reply)
        plan = require_plan(plan)
        if reply[0] == b"REPLAY":
            plan, _, reply = recorded(self.ctx.catalog, plan, reply)
        returns, at = movements(plan, reply, 5)
        return Refund(
            self.refund_id,
            reply[1],
            reply[4].decode(),
            reply[2],
            returns,
            remaining(plan, reply, at),
            reply[3] == 1,
        )

    def _errors(self, reply: list[Any]) -> None:
        code, rid = reply[0], self.request_id
        if code == b"IDEM_MISMATCH":
            msg = f"refund_id {self.refund_id!r} was already used for a different refund"
            raise FailedPreconditionError(msg)
        if code == b"NOT_FOUND":
            msg = (
                f"no charge with request_id {rid!r} on account {self.account_id!r} "
                "(charges stay refundable for the idempotency TTL)"
            )
            raise NotFoundError(msg)
        if code == b"NOT_CHARGE":
            msg = f"{rid!r} names a grant or a refund, not a charge; nothing to refund"
            raise FailedPreconditionError(msg)
        if code == b"NOT_SETTLED":
            msg = f"reservation {rid!r} is not settled: settle or release it instead"
            raise FailedPreconditionError(msg)
        if code == b"EXCEEDS":
            left = reply[1]
            msg = (
                f"nothing is left to refund on {rid!r}"
                if left == 0
                else f"only {format_micro(left)} units of the charge's meter ({left} micro-units) "
                f"are left to refund on {rid!r}"
            )
            raise FailedPreconditionError(msg)


def hold_errors(reply: list[Any], reservation_id: str) -> None:
    """Settle's and release's refusals, as errors naming the reservation."""
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
            "reservation {id!r} expired and its credits went back to the pools; reserve again",
        ),
    }
    if code in texts:
        cls, text = texts[code]
        raise cls(text.format(id=reservation_id))
