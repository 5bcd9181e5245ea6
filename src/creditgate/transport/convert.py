"""Domain results to protobuf messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.terms import Terms
from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from creditgate.domain.results import (
        AccountState,
        Decision,
        Movement,
        Refund,
        Release,
        Remaining,
        Settlement,
    )
    from creditgate.domain.topup import AutoTopUpView

_STATUS = {
    "active": admin_pb2.ACCOUNT_STATUS_ACTIVE,
    "trial": admin_pb2.ACCOUNT_STATUS_TRIAL,
    "suspended": admin_pb2.ACCOUNT_STATUS_SUSPENDED,
}
STATUS_NAMES: dict[int, str] = {int(v): k for k, v in _STATUS.items()}


def _reason(value: int) -> quota_pb2.Reason:
    return cast("quota_pb2.Reason", value)


def _moves(rows: Iterable[Movement]) -> list[quota_pb2.Debit]:
    return [
        quota_pb2.Debit(
            pool_id=m.pool_id,
            amount=m.amount,
            unit=m.unit,
            remaining=m.remaining,
            covered=m.covered,
        )
        for m in rows
    ]


def _left(rows: Iterable[Remaining]) -> list[quota_pb2.Remaining]:
    return [
        quota_pb2.Remaining(pool_id=r.pool_id, remaining=r.remaining, unit=r.unit) for r in rows
    ]


def decision(d: Decision) -> quota_pb2.Decision:
    return quota_pb2.Decision(
        allowed=d.allowed,
        reason=_reason(int(d.reason)),
        cost=d.cost,
        meter=d.meter,
        debits=_moves(d.debits),
        balances=_left(d.balances),
        retry_at_unix_ms=d.retry_at,
        request_id=d.request_id,
        replayed=d.replayed,
        shortfall=d.shortfall,
        expires_at_unix_ms=d.expires_at,
        message=d.message,
        now_unix_ms=d.now,
        dry_run=d.dry_run,
    )


def settlement(s: Settlement) -> quota_pb2.SettleResponse:
    return quota_pb2.SettleResponse(
        reservation_id=s.reservation_id,
        cost=s.cost,
        meter=s.meter,
        held=s.held,
        fully_charged=s.fully_charged,
        shortfall=s.shortfall,
        reason=_reason(int(s.reason)),
        debits=_moves(s.debits),
        balances=_left(s.balances),
        replayed=s.replayed,
        message=s.message,
    )


def release(r: Release) -> quota_pb2.ReleaseResponse:
    return quota_pb2.ReleaseResponse(
        reservation_id=r.reservation_id,
        returned=r.returned,
        returns=_moves(r.returns),
        balances=_left(r.balances),
        released=r.released,
    )


def refund(r: Refund) -> quota_pb2.RefundResponse:
    return quota_pb2.RefundResponse(
        refund_id=r.refund_id,
        refunded=r.refunded,
        meter=r.meter,
        returns=_moves(r.returns),
        refundable=r.refundable,
        balances=_left(r.balances),
        replayed=r.replayed,
    )


def balance(a: AccountState) -> quota_pb2.GetBalanceResponse:
    pools = [
        quota_pb2.PoolBalance(
            pool_id=p.pool_id,
            kind=p.kind,
            unit=p.unit,
            balance=p.balance,
            period=p.period,
            next_reset_unix_ms=p.next_reset,
            spent=p.spent,
            cap=p.cap,
            spend_unit=p.spend_unit,
            enabled=p.enabled,
            meter=p.meter,
            lots=[
                quota_pb2.Lot(
                    lot_id=lot.lot_id, balance=lot.balance, expires_at_unix_ms=lot.expires_at
                )
                for lot in p.lots
            ],
        )
        for p in a.pools
    ]
    return quota_pb2.GetBalanceResponse(
        account_id=a.account_id,
        plan_id=a.plan_id,
        status=a.status,
        stopped_until_unix_ms=a.stopped_until,
        pools=pools,
        now_unix_ms=a.now,
        recurring=recurring(a),
    )


def recurring(a: AccountState) -> list[quota_pb2.RecurringCharge]:
    return [
        quota_pb2.RecurringCharge(
            recurring_id=r.recurring_id,
            action=r.action,
            cost=r.cost,
            meter=r.meter,
            next_due_unix_ms=r.next_due,
            unpaid=r.unpaid,
        )
        for r in a.recurring
    ]


def account(a: AccountState) -> admin_pb2.Account:
    return admin_pb2.Account(
        account_id=a.account_id,
        plan_id=a.plan_id,
        status=_STATUS.get(a.status, admin_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        anchor_day=a.anchor_day,
        stopped_until_unix_ms=a.stopped_until,
        created_unix_ms=a.created,
        test_clock_unix_ms=a.test_clock,
        pools=[
            admin_pb2.PoolSettings(
                pool_id=p.pool_id, cap=p.cap, enabled=p.enabled, unit=p.spend_unit
            )
            for p in a.pools
            if p.kind in ("overage", "payg")
        ],
        terms=terms(a.terms),
        recurring=recurring(a),
    )


def terms(t: Terms) -> admin_pb2.Terms:
    return admin_pb2.Terms(
        seats=t.seats,
        allowances=t.allowances,
        prices=t.prices,
        rates=[
            admin_pb2.RateOverride(pool_id=pool, meter=meter, rate=rate)
            for pool, rates in sorted(t.rates.items())
            for meter, rate in sorted(rates.items())
        ],
        caps=[
            admin_pb2.CapRange(pool_id=pool, cap_min=low, cap_max=high)
            for pool, (low, high) in sorted(t.caps.items())
        ],
        flags=list(t.flags),
    )


def terms_of(m: admin_pb2.Terms) -> Terms:
    """The request's terms (not yet checked against a plan); a pool listed twice is refused."""
    rates: dict[str, dict[str, int]] = {}
    for r in m.rates:
        if r.meter in rates.setdefault(r.pool_id, {}):
            msg = f"terms rates: pool {r.pool_id!r} meter {r.meter!r} is listed twice"
            raise InvalidArgumentError(msg)
        rates[r.pool_id][r.meter] = r.rate
    caps: dict[str, tuple[int, int]] = {}
    for c in m.caps:
        if c.pool_id in caps:
            msg = f"terms caps: pool {c.pool_id!r} is listed twice"
            raise InvalidArgumentError(msg)
        caps[c.pool_id] = (c.cap_min, c.cap_max)
    return Terms(
        seats=m.seats or 1,
        allowances=dict(m.allowances),
        prices=dict(m.prices),
        rates=rates,
        caps=caps,
        flags=tuple(sorted(m.flags)),
    )


def auto_topup(v: AutoTopUpView) -> admin_pb2.AutoTopUp:
    s = v.settings
    return admin_pb2.AutoTopUp(
        account_id=v.account,
        pool_id=v.pool,
        unit=v.unit,
        balance=v.balance,
        enabled=s is not None,
        threshold=s.threshold if s else 0,
        amount=s.amount if s else 0,
        monthly_max=-1 if s is None or s.monthly_max is None else s.monthly_max,
        state=v.state.phase,
        state_detail=v.state.describe(),
        topup_id=v.state.topup_id,
        paused_until_unix_ms=v.state.until_ms,
    )
