"""Purchase through gRPC (seed 003), charged at the real local payment server (payments_kit)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from auth_kit import Secured
    from creditgate.ledger import LedgerStore
    from payments_kit import PaymentServer

USD = 1_000_000


def buy(purchase_id: str, amount: int = 0, account: str = "shingle") -> admin_pb2.PurchaseRequest:
    return admin_pb2.PurchaseRequest(account_id=account, purchase_id=purchase_id, amount=amount)


async def balance_of(s: Secured, account: str = "shingle") -> int:
    state = await s.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "credits")


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_approved_purchase_lands_at_once_and_is_recorded(
    shop: Secured, payments: PaymentServer, book: LedgerStore
) -> None:
    """$25 charged once in cents on the saved card; the balance pool has it; the ledger row too."""
    await shop.engine.create_account("shingle", "shingle_pro")
    answer = await shop.admin.Purchase(buy("p-1", 25 * USD), metadata=shop.auth("owner"))
    assert (answer.status, answer.amount, answer.unit) == ("succeeded", 25 * USD, "usd")
    assert (answer.pool_id, answer.balance, answer.replayed) == ("credits", 25 * USD, False)
    assert answer.provider_ref == "pi_test_1"
    assert answer.provider == f"payment provider at {payments.url}"
    assert await balance_of(shop) == 25 * USD
    [charge] = payments.charges
    assert charge["key"] == "purchase:p-1"
    assert (charge["amount"], charge["currency"], charge["customer"]) == ("2500", "usd", "shingle")
    assert charge["payment_method"] == "pm_card_7"
    [row] = await book.purchases("shingle")
    assert (row.purchase_id, row.status, row.amount, row.provider_ref) == (
        "p-1",
        "succeeded",
        25 * USD,
        "pi_test_1",
    )
    assert row.failure == ""


async def test_default_amount_is_the_plans(shop: Secured, payments: PaymentServer) -> None:
    """No amount: the plan's default, $10 for ShingleAI."""
    await shop.engine.create_account("shingle", "shingle_free")
    answer = await shop.admin.Purchase(buy("p-default"), metadata=shop.auth("admin"))
    assert answer.amount == 10 * USD
    assert payments.charges[0]["amount"] == "1000"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (4_990_000, "amount $4.99 is below the plan's minimum purchase of $5.00"),
        (1_000_010_000, "amount $1,000.01 is above the plan's maximum purchase of $1,000.00"),
        (5_000_001, "amount $5.000001 is not a whole number of cents"),
        (-1, "amount must be 0 (the plan's default) or more, got -1"),
    ],
)
async def test_amount_outside_the_limits_is_refused(
    shop: Secured, payments: PaymentServer, book: LedgerStore, amount: int, message: str
) -> None:
    """INVALID_ARGUMENT naming the limit; nothing charged, credited or recorded."""
    await shop.engine.create_account("shingle", "shingle_pro")
    err = await refused(shop.admin.Purchase(buy("p-x", amount), metadata=shop.auth("owner")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.details() or "")
    assert payments.requests == []
    assert await balance_of(shop) == 0
    assert await book.purchases("shingle") == []


async def test_same_id_replays_and_other_amount_is_an_error(
    shop: Secured, payments: PaymentServer, book: LedgerStore
) -> None:
    """The same purchase id answers the first result and charges nothing more (one audit row)."""
    await shop.engine.create_account("shingle", "shingle_pro")
    owner = shop.auth("owner")
    first = await shop.admin.Purchase(buy("p-1", 20 * USD), metadata=owner)
    again = await shop.admin.Purchase(buy("p-1", 20 * USD), metadata=owner)
    assert again.replayed
    assert (again.provider_ref, again.balance) == (first.provider_ref, 20 * USD)
    err = await refused(shop.admin.Purchase(buy("p-1", 30 * USD), metadata=owner))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "purchase_id 'p-1' was already used for $20.00, not $30.00" in (err.details() or "")
    assert len(payments.charges) == 1
    assert len(payments.requests) == 1
    assert await balance_of(shop) == 20 * USD
    audit = await book.audit_entries("shingle")
    assert [(a.rpc, a.principal) for a in audit] == [("AdminService/Purchase", "owner")]


async def test_declined_payment_credits_nothing_and_is_recorded_failed(
    shop: Secured, payments: PaymentServer, book: LedgerStore
) -> None:
    """FAILED_PRECONDITION with the decline; the row is failed; a retry asks nobody again."""
    await shop.engine.create_account("shingle", "shingle_pro")
    payments.mode = "decline"
    for _ in range(2):
        err = await refused(shop.admin.Purchase(buy("p-no", 50 * USD), metadata=shop.auth("owner")))
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "declined" in (err.details() or "")
        assert "insufficient_funds: Your card has insufficient funds." in (err.details() or "")
    assert payments.requests == ["purchase:p-no"]  # the second answer came from the ledger
    assert payments.charges == []
    assert await balance_of(shop) == 0
    [row] = await book.purchases("shingle")
    assert (row.status, row.provider_ref) == ("failed", "pi_test_1")
    assert row.failure == "insufficient_funds: Your card has insufficient funds."


async def test_no_saved_payment_method_is_a_decline(shop: Secured, payments: PaymentServer) -> None:
    """Seeds 002/003: a purchase uses the saved default payment method; none on file: refused."""
    await shop.engine.create_account("shingle", "shingle_pro")
    payments.no_card.add("shingle")
    err = await refused(shop.admin.Purchase(buy("p-card"), metadata=shop.auth("owner")))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no_payment_method" in (err.details() or "")
    assert payments.requests == []


async def test_timeout_then_retry_charges_once(
    shop: Secured, payments: PaymentServer, book: LedgerStore
) -> None:
    """The provider charged but answered late: UNAVAILABLE; the retry gets the same payment."""
    await shop.engine.create_account("shingle", "shingle_pro")
    payments.mode = "timeout"
    err = await refused(shop.admin.Purchase(buy("p-slow", 15 * USD), metadata=shop.auth("owner")))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "did not answer in time" in (err.details() or "")
    assert "retry with the same purchase_id 'p-slow'" in (err.details() or "")
    assert await balance_of(shop) == 0
    assert [r.status for r in await book.purchases("shingle")] == ["pending"]
    payments.mode = "approve"
    answer = await shop.admin.Purchase(buy("p-slow", 15 * USD), metadata=shop.auth("owner"))
    assert (answer.status, answer.provider_ref, answer.replayed) == (
        "succeeded",
        "pi_test_1",
        False,
    )
    assert payments.charged("purchase:p-slow") == 1
    assert payments.requests == ["purchase:p-slow"] * 2
    assert await balance_of(shop) == 15 * USD
    assert [r.status for r in await book.purchases("shingle")] == ["succeeded"]


async def test_provider_down_is_unavailable(shop: Secured, payments: PaymentServer) -> None:
    """A 503 is UNAVAILABLE, told apart from a timeout; nothing credited."""
    await shop.engine.create_account("shingle", "shingle_pro")
    payments.mode = "down"
    err = await refused(shop.admin.Purchase(buy("p-down"), metadata=shop.auth("owner")))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "answered 503: the test server is down" in (err.details() or "")
    assert await balance_of(shop) == 0


async def test_twenty_concurrent_identical_purchases_charge_once(
    shop: Secured, payments: PaymentServer
) -> None:
    """20 at once with one purchase id: one charge at the provider, the money added once."""
    await shop.engine.create_account("shingle", "shingle_pro")
    owner = shop.auth("owner")
    answers = await asyncio.gather(
        *(shop.admin.Purchase(buy("p-many", 40 * USD), metadata=owner) for _ in range(20))
    )
    assert {a.provider_ref for a in answers} == {"pi_test_1"}
    assert sum(not a.replayed for a in answers) == 1
    assert payments.charged("purchase:p-many") == 1
    assert await balance_of(shop) == 40 * USD


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("owner", True),
        ("admin", True),
        ("super_admin", True),
        ("billing", False),
        ("viewer", False),
        ("service", False),
    ],
)
async def test_who_may_purchase(
    shop: Secured,
    payments: PaymentServer,
    book: LedgerStore,
    role: str,
    allowed: bool,  # noqa: FBT001 - a parameter of the case
) -> None:
    """Seeds 002/003: Owner or Admin purchase; any other role changes nothing, charges nothing."""
    await shop.engine.create_account("shingle", "shingle_pro")
    request = buy(f"p-{role}", 5 * USD)
    if allowed:
        assert (await shop.admin.Purchase(request, metadata=shop.auth(role))).balance == 5 * USD
        assert len(payments.charges) == 1
        return
    err = await refused(shop.admin.Purchase(request, metadata=shop.auth(role)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "owner" in (err.details() or "")
    assert payments.requests == []
    assert await balance_of(shop) == 0
    assert await book.purchases("shingle") == []


async def test_plan_without_purchases_is_refused(shop: Secured, payments: PaymentServer) -> None:
    """A plan with no purchase limits sells no credits: FAILED_PRECONDITION, nothing charged."""
    await shop.engine.create_account("agent", "agent_team")
    err = await refused(
        shop.admin.Purchase(buy("p-1", account="agent"), metadata=shop.auth("admin"))
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "plan 'agent_team' of account 'agent' sells no credits" in (err.details() or "")
    assert payments.requests == []
