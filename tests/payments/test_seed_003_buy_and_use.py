"""Seed 003 end to end: allowance used up, blocked at zero, buy credits, keep working."""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from auth_kit import Secured
    from payments_kit import PaymentServer

USD = 1_000_000


async def test_free_account_buys_credits_to_keep_working(
    shop: Secured, payments: PaymentServer
) -> None:
    """Seed 003: free accounts can purchase credits to keep working past the allowance.

    1,000 API calls are included; the next is refused (no credits); a $5 purchase (the
    minimum) pays for the next 1,000 calls at $0.002 each, and the balance shows $3.
    """
    await shop.engine.create_account("free", "shingle_free")
    service = shop.auth("service")

    def calls(n: int, rid: str) -> quota_pb2.CheckAndConsumeRequest:
        return quota_pb2.CheckAndConsumeRequest(
            account_id="free", action="shingle.api", quantity=n, request_id=rid
        )

    assert (await shop.quota.CheckAndConsume(calls(1000, "r1"), metadata=service)).allowed
    blocked = await shop.quota.CheckAndConsume(calls(1, "r2"), metadata=service)
    assert not blocked.allowed
    assert blocked.reason == quota_pb2.REASON_INSUFFICIENT_CREDITS
    bought = await shop.admin.Purchase(
        admin_pb2.PurchaseRequest(account_id="free", purchase_id="buy-1", amount=5 * USD),
        metadata=shop.auth("owner"),
    )
    assert bought.balance == 5 * USD
    after = await shop.quota.CheckAndConsume(calls(1000, "r3"), metadata=service)
    assert after.allowed
    assert [(d.pool_id, d.amount) for d in after.debits] == [("credits", 2 * USD)]
    state = await shop.engine.balance("free")
    assert {p.pool_id: p.balance for p in state.pools}["credits"] == 3 * USD
    assert payments.charges[0]["amount"] == "500"
