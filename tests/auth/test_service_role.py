"""The ``service`` role charges, and reads nothing it does not charge (seeds 002/003).

Only Owner or Admin (and the super admin) may view the money balance; viewer and billing read
accounts without it. A service is refused GetBalance and GetAccount, and each of its quota
answers lists only the balances of the pools that call moved. Real tokens, a real server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from auth_kit import Secured

M = 1_000_000


def _charge(account: str, action: str, quantity: int, rid: str) -> quota_pb2.CheckAndConsumeRequest:
    return quota_pb2.CheckAndConsumeRequest(
        account_id=account, action=action, quantity=quantity, request_id=rid
    )


def _shown(answer: Message) -> set[str]:
    return {b.pool_id for b in answer.balances}  # type: ignore[attr-defined]


def _moved(answer: Message) -> set[str]:
    rows = answer.returns if hasattr(answer, "returns") else answer.debits  # type: ignore[attr-defined]
    return {row.pool_id for row in rows}


async def test_service_may_not_read_accounts(secured: Secured) -> None:
    """GetBalance and GetAccount: PERMISSION_DENIED for service, naming who may; others read."""
    await secured.engine.create_account("shingle", "shingle_pro")
    balance = quota_pb2.GetBalanceRequest(account_id="shingle")
    account = admin_pb2.GetAccountRequest(account_id="shingle")
    for call in (
        secured.quota.GetBalance(balance, metadata=secured.auth("service")),
        secured.admin.GetAccount(account, metadata=secured.auth("service")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        details = info.value.details() or ""
        assert details.startswith("token 'service' has role service, which may not call Get")
        assert details.endswith("roles that may: viewer, billing, admin, owner, super_admin")
    for role, money in (("viewer", False), ("billing", False), ("owner", True), ("admin", True)):
        shown = await secured.quota.GetBalance(balance, metadata=secured.auth(role))
        assert ("credits" in {p.pool_id for p in shown.pools}) is money, role


async def test_a_service_answer_shows_only_the_pools_it_moved(secured: Secured) -> None:
    """Charge, batch, reserve, settle, refund and release: balances of the moved pools only.

    The money balance (credits) shows when the charge spilled into it, never otherwise; the
    super admin's answer to the same charge lists every pool.
    """
    engine, quota, md = secured.engine, secured.quota, secured.auth("service")
    await engine.create_account("shingle", "shingle_free")
    await engine.grant("shingle", "credits", 25 * M, "buy-1")
    every = {p.pool_id for p in (await engine.balance("shingle")).pools}

    emails = await quota.CheckAndConsume(_charge("shingle", "shingle.email", 10, "e1"), metadata=md)
    assert emails.allowed
    assert _shown(emails) == _moved(emails) == {"email"}
    spill = await quota.CheckAndConsume(_charge("shingle", "shingle.email", 95, "e2"), metadata=md)
    assert _shown(spill) == _moved(spill) == {"email", "credits"}
    denied = await quota.CheckAndConsume(
        _charge("shingle", "shingle.sms", 10**6, "s1"), metadata=md
    )
    assert (denied.allowed, _shown(denied)) == (False, set())
    api = _charge("shingle", "shingle.api", 1, "a1")
    assert _shown(await quota.CheckAndConsume(api, metadata=secured.auth("super_admin"))) == every

    items = [_charge("shingle", "shingle.api", 1, "a2"), _charge("shingle", "shingle.llm", 5, "l1")]
    batch = quota_pb2.CheckAndConsumeBatchRequest(requests=items)
    decisions = (await quota.CheckAndConsumeBatch(batch, metadata=md)).decisions
    assert [_shown(d) for d in decisions] == [{"api"}, {"tokens"}]

    hold = quota_pb2.ReserveRequest(
        account_id="shingle", action="shingle.api", quantity=3, reservation_id="h1"
    )
    assert _shown(await quota.Reserve(hold, metadata=md)) == {"api"}
    settle = quota_pb2.SettleRequest(account_id="shingle", reservation_id="h1", quantity=2)
    assert _shown(await quota.Settle(settle, metadata=md)) == {"api"}
    refund = quota_pb2.RefundRequest(account_id="shingle", request_id="e2", refund_id="f1")
    refunded = await quota.Refund(refund, metadata=md)
    assert _shown(refunded) == _moved(refunded) == {"email", "credits"}
    await quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="shingle", action="shingle.llm", quantity=7, reservation_id="h2"
        ),
        metadata=md,
    )
    release = quota_pb2.ReleaseRequest(account_id="shingle", reservation_id="h2")
    assert _shown(await quota.Release(release, metadata=md)) == {"tokens"}
