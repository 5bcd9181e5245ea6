"""Domain results to protobuf messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from creditgate.domain.catalog import Plan
    from creditgate.domain.results import (
        AccountState,
        Decision,
        Movement,
        Refund,
        Release,
        Remaining,
        Settlement,
    )

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


def allowed_decision(
    plan: Plan,
    reply: list[Any],
    request_id: str,
    meter: str,
    dry_run: bool,  # noqa: FBT001 - the engine's present() callback is positional
) -> quota_pb2.Decision:
    """An allowed consume reply straight to its message (the hot path).

    The same message as ``decision(replies.decision(...))`` for that reply, without the domain
    values in between; a test holds the two to that.
    """
    d = quota_pb2.Decision(
        allowed=True,
        reason=quota_pb2.REASON_ALLOWED,
        cost=reply[3],
        meter=meter,
        retry_at_unix_ms=reply[4],
        request_id=request_id,
        replayed=reply[6] == 1,
        shortfall=reply[7],
        expires_at_unix_ms=reply[8],
        now_unix_ms=reply[5],
        dry_run=dry_run,
    )
    units = plan.units
    debit = d.debits.add
    i = 10
    for _ in range(reply[9]):
        pool_id = reply[i].decode()
        debit(
            pool_id=pool_id,
            amount=reply[i + 1],
            unit=units.get(pool_id, ""),
            remaining=reply[i + 2],
            covered=reply[i + 3],
        )
        i += 4
    balance = d.balances.add
    for pool_id, unit in plan.layout:
        balance(pool_id=pool_id, remaining=reply[i], unit=unit)
        i += 1
    return d


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
    )


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
    )
