"""Turns script replies (flat arrays of integers and byte strings) into domain results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from creditgate.domain.results import (
    AccountState,
    Decision,
    Lot,
    Movement,
    PoolState,
    Reason,
    Remaining,
)

if TYPE_CHECKING:
    from creditgate.domain.catalog import Plan


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def movements(plan: Plan, reply: list[Any], at: int) -> tuple[tuple[Movement, ...], int]:
    """Rows of (pool, amount, remaining, covered) starting with their count at ``at``."""
    n = reply[at]
    rows = []
    i = at + 1
    for _ in range(n):
        pool_id = _text(reply[i])
        pool = plan.pool(pool_id)
        unit = pool.balance_unit if pool else ""
        rows.append(Movement(pool_id, reply[i + 1], unit, reply[i + 2], reply[i + 3]))
        i += 4
    return tuple(rows), i


def remaining(plan: Plan, reply: list[Any], at: int) -> tuple[Remaining, ...]:
    return tuple(Remaining(p.id, reply[at + i], p.balance_unit) for i, p in enumerate(plan.pools))


def decision(
    plan: Plan,
    reply: list[Any],
    request_id: str,
    meter: str,
    *,
    dry_run: bool,
) -> Decision:
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


def account_state(account_id: str, plan: Plan | None, reply: list[Any]) -> AccountState:
    pools = []
    i = 8
    for p in plan.pools if plan else ():
        n_lots = reply[i + 5]
        lots = tuple(
            Lot(_text(reply[i + 6 + 3 * k]), reply[i + 7 + 3 * k], reply[i + 8 + 3 * k])
            for k in range(n_lots)
        )
        pools.append(
            PoolState(
                pool_id=p.id,
                kind=p.kind,
                unit=p.balance_unit,
                meter=p.meter or "",
                balance=reply[i],
                period=p.period,
                next_reset=reply[i + 1],
                spent=reply[i + 2],
                cap=reply[i + 3],
                spend_unit=p.spend_unit,
                enabled=reply[i + 4] == 1,
                lots=lots,
            )
        )
        i += 6 + 3 * n_lots
    return AccountState(
        account_id=account_id,
        plan_id=_text(reply[1]),
        status=_text(reply[2]),
        anchor_day=reply[3],
        stopped_until=reply[4],
        now=reply[5],
        created=reply[6],
        test_clock=reply[7],
        pools=tuple(pools),
    )
