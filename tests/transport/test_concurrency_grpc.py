"""200 concurrent RPCs through a real server: the affordable ones pass, and no more."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar

PRO = {"model": "pro", "feature": "agents"}  # 3 agent credits a message on agent_team


async def _bonus_only_account(sidecar: Sidecar, account: str, amount: int) -> None:
    """An agent_free account whose only spendable pool is ``amount`` bonus credits."""
    await sidecar.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=account, plan_id="agent_free")
    )
    await sidecar.admin.Grant(
        admin_pb2.GrantRequest(
            account_id=account, pool_id="bonus", amount=amount * 1_000_000, grant_id="g"
        )
    )


async def _bonus(sidecar: Sidecar, account: str) -> int:
    balance = await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=account))
    return next(p.balance for p in balance.pools if p.pool_id == "bonus")


async def test_200_concurrent_charges_allow_exactly_the_affordable(sidecar: Sidecar) -> None:
    """100 bonus credits, 200 concurrent 3-credit charges: exactly 33 pass, 1 credit is left."""
    await _bonus_only_account(sidecar, "hot", 100)
    replies = await asyncio.gather(
        *(
            sidecar.quota.CheckAndConsume(
                quota_pb2.CheckAndConsumeRequest(
                    account_id="hot",
                    action="agent.message",
                    quantity=1,
                    attributes=PRO,
                    request_id=f"c{i}",
                )
            )
            for i in range(200)
        )
    )
    allowed = [r for r in replies if r.allowed]
    assert len(allowed) == 33
    assert sum(r.cost for r in allowed) == 100_000_000 - await _bonus(sidecar, "hot")
    assert {r.reason for r in replies if not r.allowed} == {quota_pb2.REASON_INSUFFICIENT_CREDITS}


async def test_200_concurrent_reserve_then_settle_never_overspend(sidecar: Sidecar) -> None:
    """200 concurrent 3-credit holds on 100 credits: exactly 33 hold.

    Then, concurrently, 20 settle and 13 release: exactly 20 x 3 credits are spent, the rest
    is back.
    """
    await _bonus_only_account(sidecar, "agent", 100)
    holds = await asyncio.gather(
        *(
            sidecar.quota.Reserve(
                quota_pb2.ReserveRequest(
                    account_id="agent",
                    action="agent.message",
                    quantity=1,
                    attributes=PRO,
                    reservation_id=f"h{i}",
                    ttl_seconds=600,
                )
            )
            for i in range(200)
        )
    )
    held = [h.request_id for h in holds if h.allowed]
    assert len(held) == 33
    assert await _bonus(sidecar, "agent") == 1_000_000
    settled = await asyncio.gather(
        *(
            sidecar.quota.Settle(
                quota_pb2.SettleRequest(account_id="agent", reservation_id=rid, quantity=1)
            )
            for rid in held[:20]
        ),
        *(
            sidecar.quota.Release(quota_pb2.ReleaseRequest(account_id="agent", reservation_id=rid))
            for rid in held[20:]
        ),
    )
    assert all(s.fully_charged for s in settled[:20])
    assert await _bonus(sidecar, "agent") == 100_000_000 - 20 * 3_000_000
