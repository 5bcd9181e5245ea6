"""A pure-Python reference model of creditgate's pool rules, for property tests.

``ReferenceModel`` keeps accounts in memory and answers every engine operation with the same
result types and error classes as ``creditgate.engine.Engine`` running with a test clock: each
account's time is frozen at the ``now`` it was created with and moves only when advanced.
Messages are not modelled (they are left empty).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from creditgate.domain import requests as check
from creditgate.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from creditgate.domain.money import MAX_AMOUNT
from creditgate.domain.money import demand as meter_demand
from creditgate.domain.results import Decision, Reason, Refund, Release, Settlement, net_by_pool
from creditgate.testing import _ref_notices as notices
from creditgate.testing._ref_admin import AdminModel
from creditgate.testing._ref_state import Hold, Op, Record
from creditgate.testing._ref_walk import (
    account_block,
    dry_rows,
    give_back,
    plan_charge,
    retry_at,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.catalog import Price
    from creditgate.testing._ref_state import Account, Live


def _refund_value(quantity: int, unit_cost: int, per: int) -> int:
    """Part of a charge is valued rounded down (the charge was rounded up)."""
    product = quantity * unit_cost
    if product > MAX_AMOUNT:
        msg = "quantity x price is beyond the exact range (2^52 micro-units)"
        raise InvalidArgumentError(msg)
    return product // per


def _demand(quantity: int, unit_cost: int, per: int) -> int:
    d = meter_demand(quantity, unit_cost, per)
    if d is None:
        msg = "quantity x price is beyond the exact range (2^52 micro-units)"
        raise InvalidArgumentError(msg)
    return d


class ReferenceModel(AdminModel):
    """The engine's operations over in-memory accounts (see the module docstring)."""

    def consume(  # noqa: PLR0913 - mirrors Engine.consume
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
        acct = self._account(account_id)
        mode = "R" if reserve else "C"
        fp = (mode, action, quantity, tuple(sorted(attributes.items())))
        rec = acct.records.get(rid)
        if rec is not None:
            if rec.fingerprint != fp or not isinstance(rec.reply, Decision):
                msg = f"request_id {rid!r} was already used for a different request"
                raise FailedPreconditionError(msg)
            return dataclasses.replace(rec.reply, replayed=True, dry_run=dry_run)
        op = self._op(acct)
        price = op.plan.actions[action].price(attributes)
        uc, per, meter = (price.unit_cost, price.per, price.meter) if price else (0, 1, "")
        need = _demand(quantity, uc, per)
        eligible = _eligible(op, action, price, attributes)
        denial = _deny(op, eligible, need)
        base = Decision(
            allowed=True,
            reason=Reason.ALLOWED,
            cost=need,
            meter=meter,
            debits=(),
            balances=(),
            request_id=rid,
            now=op.now,
            dry_run=dry_run,
        )
        if denial is not None:
            reason, retry, shortfall = denial
            if not dry_run and reason in (Reason.INSUFFICIENT_CREDITS, Reason.SPEND_CAP_REACHED):
                capped = reason == Reason.SPEND_CAP_REACHED
                notices.denied(op, eligible, capped=capped, rid=rid, key=self._key(account_id))
            return dataclasses.replace(
                base,
                allowed=False,
                reason=reason,
                retry_at=retry,
                shortfall=shortfall,
                balances=op.balances(),
            )
        takes, _, _ = plan_charge(op, eligible, need)
        if dry_run:
            rows = dry_rows(op, takes)
            after = {m.pool_id: m.remaining for m in rows}
            balances = tuple(
                dataclasses.replace(b, remaining=after.get(b.pool_id, b.remaining))
                for b in op.balances()
            )
            return dataclasses.replace(base, debits=rows, balances=balances)
        debits = notices.charge(op, takes, rid, self._key(account_id))
        expires = 0
        record = Record(
            mode, fp, base, debits=debits, covered=need, unit_cost=uc, per=per, meter=meter
        )
        if hold_ttl_ms is not None:
            expires = op.now + hold_ttl_ms
            acct.holds[rid] = Hold(
                debits, need, uc, per, [(p.pool_id, rate) for p, rate in eligible], expires, meter
            )
            record.state, record.debits = "held", []
        record.reply = dataclasses.replace(
            base, debits=op.debit_rows(debits), balances=op.balances(), expires_at=expires
        )
        acct.records[rid] = record
        return record.reply

    def reserve(  # noqa: PLR0913, PLR0917 - mirrors Engine.reserve
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
        return self.consume(
            account_id,
            action,
            quantity,
            attributes,
            reservation_id,
            dry_run=dry_run,
            hold_ttl_ms=ttl_ms,
        )

    def settle(self, account_id: str, reservation_id: str, quantity: int) -> Settlement:
        """Charge the real quantity: less gives the rest back, more charges the extra."""
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        check.check_quantity(quantity, allow_zero=True)
        acct = self._account(account_id)
        rec = _reservation(acct, reservation_id)
        if rec.settlement is not None:
            return dataclasses.replace(rec.settlement, replayed=True)
        if rec.state == "released":
            msg = f"reservation {reservation_id!r} was released"
            raise FailedPreconditionError(msg)
        op = self._op(acct)
        hold = acct.holds.get(reservation_id)
        if hold is None:
            msg = f"reservation {reservation_id!r} expired"
            raise FailedPreconditionError(msg)
        actual = _demand(quantity, hold.unit_cost, hold.per)
        key = self._key(account_id)
        charged, shortfall, reason = _settle_charge(op, hold, actual, reservation_id, key)
        del acct.holds[reservation_id]
        result = Settlement(
            reservation_id=reservation_id,
            cost=charged,
            meter=hold.meter,
            held=hold.covered,
            fully_charged=shortfall == 0,
            shortfall=shortfall,
            reason=reason,
            debits=net_by_pool(op.debit_rows(hold.debits)),
            balances=op.balances(),
        )
        rec.state, rec.debits, rec.covered, rec.settlement = "settled", hold.debits, charged, result
        rec.unit_cost, rec.per, rec.refunded = hold.unit_cost, hold.per, 0
        return result

    def release(self, account_id: str, reservation_id: str) -> Release:
        """Drop a hold, giving its credits back; a no-op answer if it was released or expired."""
        check.check_id(account_id, "account_id")
        check.check_id(reservation_id, "reservation_id")
        acct = self._account(account_id)
        rec = _reservation(acct, reservation_id)
        if rec.state == "settled":
            msg = f"reservation {reservation_id!r} is already settled"
            raise FailedPreconditionError(msg)
        op = self._op(acct)
        hold = acct.holds.pop(reservation_id, None)
        if rec.state == "released" or hold is None:
            state = "released" if rec.state == "released" else "expired"
            return Release(
                reservation_id,
                released=False,
                returned=0,
                returns=(),
                balances=op.balances(),
                state=state,
            )
        rows, total = give_back(op, hold.debits, hold.covered)
        rec.state = "released"
        return Release(
            reservation_id,
            released=True,
            returned=total,
            returns=tuple(rows),
            balances=op.balances(),
            state="released",
        )

    def refund(
        self,
        account_id: str,
        request_id: str,
        refund_id: str,
        quantity: int = 0,
    ) -> Refund:
        """Return a charge or settled reservation, all that is left (0) or ``quantity``."""
        check.check_refund(account_id, request_id, refund_id, quantity)
        acct = self._account(account_id)
        fp = ("F", request_id, quantity)
        done = acct.records.get(refund_id)
        if done is not None:
            if done.fingerprint != fp or not isinstance(done.reply, Refund):
                msg = f"refund_id {refund_id!r} was already used for a different request"
                raise FailedPreconditionError(msg)
            return dataclasses.replace(done.reply, replayed=True)
        charge = _charge(acct, request_id)
        op = self._op(acct)
        left = charge.covered - charge.refunded
        amount = _refund_value(quantity, charge.unit_cost, charge.per) if quantity else left
        if amount > left or left == 0:
            msg = f"only {left} micro-units of the meter are left to refund on {request_id!r}"
            raise FailedPreconditionError(msg)
        rows, total = give_back(op, charge.debits, amount)
        charge.refunded += total
        result = Refund(refund_id, total, charge.meter, left - total, tuple(rows), op.balances())
        acct.records[refund_id] = Record("F", fp, result)
        return result


def _eligible(
    op: Op,
    action: str,
    price: Price | None,
    attributes: dict[str, str],
) -> list[tuple[Live, int]]:
    """The plan's pools that pay for this action, in consumption order, with their rates."""
    out = []
    for p in op.pools:
        cfg = p.config
        rate = (
            None if price is None or cfg is None else cfg.rate_for(action, price.meter, attributes)
        )
        if rate is not None:
            out.append((p, rate))
    return out


def _deny(
    op: Op,
    eligible: list[tuple[Live, int]],
    need: int,
) -> tuple[Reason, int, int] | None:
    """Why a request of ``need`` meter micro-units is refused: reason, retry_at, shortfall."""
    block = account_block(op)
    if block is not None:
        return block[0], block[1], need
    if not eligible and need > 0:
        return Reason.NOT_ENTITLED, 0, need
    _, rem, capped = plan_charge(op, eligible, need)
    if rem > 0:
        reason = Reason.SPEND_CAP_REACHED if capped else Reason.INSUFFICIENT_CREDITS
        return reason, retry_at(op, eligible, need), rem
    return None


def _settle_charge(
    op: Op, hold: Hold, actual: int, rid: str, key: Callable[[], str]
) -> tuple[int, int, Reason]:
    """Charged meter, shortfall and reason of settling ``hold`` at ``actual``."""
    if actual <= hold.covered:
        give_back(op, hold.debits, hold.covered - actual)
        return actual, 0, Reason.ALLOWED
    extra = actual - hold.covered
    eligible = [
        (op.by_id[pid], rate)
        for pid, rate in hold.eligible
        if pid in op.by_id and not op.by_id[pid].ghost
    ]
    block = account_block(op)
    if block is not None:
        return hold.covered, extra, block[0]
    takes, rem, capped = plan_charge(op, eligible, extra)
    if rem > 0:
        return (
            hold.covered,
            extra,
            Reason.SPEND_CAP_REACHED if capped else (Reason.INSUFFICIENT_CREDITS),
        )
    hold.debits.extend(notices.charge(op, takes, rid, key))
    return actual, 0, Reason.ALLOWED


def _reservation(acct: Account, reservation_id: str) -> Record:
    rec = acct.records.get(reservation_id)
    if rec is None:
        msg = f"no reservation {reservation_id!r} on this account"
        raise NotFoundError(msg)
    if rec.kind != "R":
        msg = f"{reservation_id!r} is not a reservation: use Refund"
        raise FailedPreconditionError(msg)
    return rec


def _charge(acct: Account, request_id: str) -> Record:
    rec = acct.records.get(request_id)
    if rec is None:
        msg = f"no charge with request_id {request_id!r} on this account"
        raise NotFoundError(msg)
    if rec.kind not in "CR":
        msg = f"{request_id!r} names a grant or a refund, not a charge"
        raise FailedPreconditionError(msg)
    if rec.kind == "R" and rec.state != "settled":
        msg = f"reservation {request_id!r} is not settled: settle or release it instead"
        raise FailedPreconditionError(msg)
    return rec
