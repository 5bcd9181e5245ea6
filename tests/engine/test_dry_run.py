"""A dry run answers exactly what the real charge would: its debits and its balances after it.

Each case charges a pool kind of the demo plans (allowance, grant, an overage block bought,
a USD balance, pay-as-you-go): the dry run, then the same charge for real. Both answers list the
same debits and the same balances, and in each a debited pool's balance is the debit's
``remaining`` (before the fix, a dry run's balances showed the pools before the would-be debit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from creditgate.engine import Engine

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog
    from creditgate.domain.results import Decision

M = 1_000_000


@dataclass(frozen=True)
class Case:
    plan: str
    action: str
    quantity: int
    attributes: dict[str, str] = field(default_factory=dict)
    grant: tuple[str, int] | None = None  # (pool, micro-units) granted first
    payg: bool = False  # turn pay-as-you-go on first
    pools: tuple[str, ...] = ()  # the pools the charge must take from


CASES = {
    "allowance": Case("agent_free", "agent.message", 30, {"model": "light", "feature": "chat"},
                      pools=("daily",)),
    "allowance-then-overage-block": Case("glue_starter", "glue.app_action", 2_500,
                                         pools=("base", "overage")),
    "allowance-then-usd-balance": Case("shingle_free", "shingle.email", 150,
                                       grant=("credits", 5 * M), pools=("email", "credits")),
    "grant-then-allowance-then-payg": Case(
        "agent_team", "agent.message", 700, {"model": "pro", "feature": "chat"},
        grant=("bonus", 5 * M), payg=True, pools=("bonus", "premium", "payg"),
    ),
}  # fmt: skip


def _after(d: Decision) -> dict[str, int]:
    return {b.pool_id: b.remaining for b in d.balances}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_dry_run_answers_the_balances_the_charge_would_leave(
    redis: AsyncRedis, demo_catalog: Catalog, case: Case
) -> None:
    engine = Engine(redis, demo_catalog, test_clock=True)
    await engine.create_account("acct-1", case.plan)
    if case.grant is not None:
        await engine.grant("acct-1", case.grant[0], case.grant[1], "g-1")
    if case.payg:
        await engine.set_pool_settings("acct-1", "payg", enabled=True)
    before = {p.pool_id: p.balance for p in (await engine.balance("acct-1")).pools}
    args = ("acct-1", case.action, case.quantity, case.attributes)

    dry = await engine.consume(*args, "dry-1", dry_run=True)
    real = await engine.consume(*args, "real-1")

    assert (dry.allowed, dry.dry_run, real.allowed, real.dry_run) == (True, True, True, False)
    assert tuple(m.pool_id for m in dry.debits) == case.pools
    assert dry.debits == real.debits
    assert dry.balances == real.balances
    for answer in (dry, real):
        for m in answer.debits:
            assert _after(answer)[m.pool_id] == m.remaining, (m, answer.balances)
            assert m.remaining != before[m.pool_id]
