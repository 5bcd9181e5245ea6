"""Auto top-up end to end (issue 20 §3, seeds 002/003 and seed 000's monthly maximum).

Through gRPC with tokens: the settings (roles, limits), charges that cross the threshold, the
top-up consumer charging the real local payment server, the grant, the notification in the
outbox, a decline pausing it until a one-time purchase, and the monthly maximum.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from creditgate.ledger.sql import SqlLedger
from creditgate.notify import Notifications, NotifyConsumer, NotifyStore
from creditgate.payments.stripe import StripeProvider
from creditgate.payments.topups import TopUpConsumer, TopUpUnreachableError
from creditgate.v1 import admin_pb2, quota_pb2
from creditgate.worker import Worker
from payments_kit import KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from auth_kit import Secured
    from creditgate.ledger import LedgerStore
    from payments_kit import PaymentServer

USD = 1_000_000
T0 = 4_076_827_200_000  # 2099-03-10T12:00:00Z
APRIL = 4_078_684_800_000  # 2099-04-01T00:00:00Z


@pytest_asyncio.fixture
async def payer(shop: Secured, payments: PaymentServer, book: LedgerStore) -> AsyncIterator[Worker]:
    """The top-up consumer as a worker: its own group, charging the local payment server."""
    assert isinstance(book, SqlLedger)
    provider = StripeProvider(payments.url, KEY, timeout_s=1.0)
    consumer = TopUpConsumer(shop.engine, provider, book, Notifications(NotifyStore(book)))
    worker = Worker(shop.engine.runner.redis, consumer, shop.engine.keys, block_ms=0,
                    claim_idle_ms=0)  # fmt: skip
    await worker.setup()  # its group exists before another group's housekeeping trims
    try:
        yield worker
    finally:
        await provider.close()


def api(n: int, rid: str) -> quota_pb2.CheckAndConsumeRequest:
    return quota_pb2.CheckAndConsumeRequest(
        account_id="shingle", action="shingle.api", quantity=n, request_id=rid
    )


def topup(**change: int | bool) -> admin_pb2.SetAutoTopUpRequest:
    return admin_pb2.SetAutoTopUpRequest(account_id="shingle", **change)  # type: ignore[arg-type]


async def _open(shop: Secured, wallet: int) -> None:
    """shingle_pro with its 100,000 API calls used and ``wallet`` dollars in credits."""
    await shop.engine.create_account("shingle", "shingle_pro")
    await shop.engine.advance_clock("shingle", to_ms=T0)
    await shop.engine.grant("shingle", "credits", wallet * USD, "seed")
    answer = await shop.quota.CheckAndConsume(
        api(100_000, "allowance"), metadata=shop.auth("service")
    )
    assert answer.allowed


async def _spend(shop: Secured, dollars: int, rid: str) -> quota_pb2.Decision:
    """$0.001 per API call from the credits pool."""
    return await shop.quota.CheckAndConsume(api(dollars * 1000, rid), metadata=shop.auth("service"))


async def _state(shop: Secured) -> admin_pb2.AutoTopUp:
    return await shop.admin.GetAutoTopUp(
        admin_pb2.GetAutoTopUpRequest(account_id="shingle"), metadata=shop.auth("owner")
    )


async def _sent(book: LedgerStore) -> list[tuple[str, dict[str, str]]]:
    assert isinstance(book, SqlLedger)
    rows, _ = await NotifyStore(book).notifications("shingle")
    return [(n.kind, json.loads(n.payload)["data"]) for n in reversed(rows)]


def topup_charges(payments: PaymentServer) -> list[dict[str, str]]:
    return [c for c in payments.charges if c["key"].startswith("topup:")]


async def test_settings_roles_and_limits(shop: Secured) -> None:
    """Owner or Admin set it (seeds 002/003), Super Admin or Billing the monthly maximum (000)."""
    await _open(shop, wallet=50)
    off = await _state(shop)
    assert (off.pool_id, off.enabled, off.state, off.monthly_max) == ("credits", False, "idle", -1)
    on = await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    assert (on.enabled, on.threshold, on.amount, on.balance) == (True, 5 * USD, 10 * USD, 50 * USD)
    capped = await shop.admin.SetAutoTopUp(
        topup(monthly_max=30 * USD), metadata=shop.auth("billing")
    )
    assert (capped.threshold, capped.monthly_max) == (5 * USD, 30 * USD)

    async def refused(who: str, request: admin_pb2.SetAutoTopUpRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await shop.admin.SetAutoTopUp(request, metadata=shop.auth(who))
        return info.value

    denied = await refused("billing", topup(threshold=1 * USD))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "owner" in (denied.details() or "")
    denied = await refused("owner", topup(monthly_max=-1))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "billing" in (denied.details() or "")
    assert (
        await refused("service", topup(enabled=False))
    ).code() == grpc.StatusCode.PERMISSION_DENIED
    for request, words in [
        (topup(amount=4 * USD), "between $5.00 and $100,000.00"),
        (topup(threshold=11 * USD), "threshold must be between $0.00 and the purchase amount"),
        (topup(amount=10 * USD + 1), "whole cents"),
        (topup(), "nothing to change"),
        (topup(threshold=-1), "threshold is micro-units, 0 or more"),
        (topup(monthly_max=-2), "monthly_max is micro-units, or -1"),
        (admin_pb2.SetAutoTopUpRequest(account_id="shingle", pool_id="api", enabled=True),
         "balance pool"),
    ]:  # fmt: skip
        bad = await refused("super_admin", request)
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert words in (bad.details() or ""), (words, bad.details())
    after = await _state(shop)
    assert (after.threshold, after.amount, after.monthly_max) == (5 * USD, 10 * USD, 30 * USD)
    off = await shop.admin.SetAutoTopUp(topup(enabled=False), metadata=shop.auth("admin"))
    assert not off.enabled


async def test_a_crossing_is_paid_once_and_notified(
    shop: Secured, payments: PaymentServer, book: LedgerStore, payer: Worker
) -> None:
    await _open(shop, wallet=20)
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    assert (await _spend(shop, 16, "r1")).allowed  # $20 -> $4: at or below $5
    flight = await _state(shop)
    assert flight.state == "in_flight"
    assert flight.topup_id
    assert await payer.drain() == 1
    [charge] = topup_charges(payments)
    assert (charge["key"], charge["amount"]) == (f"topup:{flight.topup_id}", "1000")
    paid = await _state(shop)
    assert (paid.state, paid.balance) == ("idle", 14 * USD)
    purchases = await book.purchases("shingle")
    assert [(p.purchase_id, p.status) for p in purchases] == [
        (f"auto:{flight.topup_id}", "succeeded")
    ]
    sent = await _sent(book)
    assert [k for k, _ in sent] == ["credit_auto_recharge_triggered"]
    assert sent[0][1]["amount"] == str(10 * USD)
    assert sent[0][1]["balance"] == str(14 * USD)
    # A redelivery (the group re-read from the start) charges and sends nothing again.
    for stream in shop.engine.keys.streams():
        await shop.engine.runner.redis.xgroup_setid(stream, payer.group, "0")
    await payer.drain()
    assert len(topup_charges(payments)) == 1
    assert len(await _sent(book)) == 1


async def test_100_concurrent_crossings_make_one_top_up(
    shop: Secured, payments: PaymentServer, book: LedgerStore, payer: Worker
) -> None:
    """The issue's test: one top-up, one charge, one credit_auto_recharge_triggered."""
    await _open(shop, wallet=200)
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=150 * USD, amount=150 * USD), metadata=shop.auth("owner")
    )
    gate = asyncio.Semaphore(20)

    async def one(i: int) -> bool:
        async with gate:
            return (await _spend(shop, 1, f"c{i}")).allowed

    assert all(await asyncio.gather(*(one(i) for i in range(100))))
    await payer.drain()
    assert len(topup_charges(payments)) == 1
    assert [k for k, _ in await _sent(book)] == ["credit_auto_recharge_triggered"]
    assert (await _state(shop)).balance == (200 - 100 + 150) * USD


async def test_a_decline_pauses_until_a_one_time_purchase(
    shop: Secured, payments: PaymentServer, book: LedgerStore, payer: Worker
) -> None:
    """Seed 003: one credit_purchase_failed, no retry; a purchase restores auto top-up."""
    await _open(shop, wallet=20)
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    payments.mode = "decline"
    await _spend(shop, 16, "r1")
    await payer.drain()
    failed = await _state(shop)
    assert failed.state == "failed"
    assert "one-time purchase" in failed.state_detail
    assert [k for k, _ in await _sent(book)] == ["credit_purchase_failed"]
    # Further crossings and a denial start nothing while paused: no second attempt.
    await _spend(shop, 3, "r2")
    assert not (await _spend(shop, 5, "r3")).allowed
    await payer.drain()
    assert len(payments.requests) == 1
    assert [k for k, _ in await _sent(book)] == ["credit_purchase_failed"]
    # Update the card, buy once: auto top-up is back, and the next crossing is paid.
    payments.mode = "approve"
    bought = await shop.admin.Purchase(
        admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="p1", amount=10 * USD),
        metadata=shop.auth("owner"),
    )
    assert bought.balance == 11 * USD
    assert (await _state(shop)).state == "idle"
    await _spend(shop, 7, "r4")  # $11 -> $4
    await payer.drain()
    assert len(topup_charges(payments)) == 1
    assert [k for k, _ in await _sent(book)] == [
        "credit_purchase_failed",
        "credit_auto_recharge_triggered",
    ]


async def test_an_unreachable_provider_is_retried_with_the_same_key(
    shop: Secured, payments: PaymentServer, payer: Worker
) -> None:
    await _open(shop, wallet=20)
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    payments.mode = "down"
    await _spend(shop, 16, "r1")
    with pytest.raises(TopUpUnreachableError):
        await payer.drain()
    assert (await _state(shop)).state == "in_flight"
    payments.mode = "approve"
    await payer.drain()
    assert len(topup_charges(payments)) == 1
    assert len(set(payments.requests)) == 1  # the same idempotency key both times
    assert (await _state(shop)).balance == 14 * USD


async def test_the_monthly_maximum_pauses_until_next_month(
    shop: Secured, payments: PaymentServer, payer: Worker
) -> None:
    """Seed 000's term: $10 a month, $10 a top-up; the second is not charged until April."""
    await _open(shop, wallet=20)
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    await shop.admin.SetAutoTopUp(topup(monthly_max=10 * USD), metadata=shop.auth("billing"))
    await _spend(shop, 16, "r1")
    await payer.drain()
    await _spend(shop, 10, "r2")  # $14 -> $4
    await payer.drain()
    paused = await _state(shop)
    assert (paused.state, paused.paused_until_unix_ms) == ("monthly_max", APRIL)
    assert len(topup_charges(payments)) == 1
    await shop.engine.advance_clock("shingle", to_ms=APRIL + 1000)
    await _spend(shop, 1, "r3")  # still below the threshold: the next charge starts one
    await payer.drain()
    assert len(topup_charges(payments)) == 2
    assert (await _state(shop)).state == "idle"


async def test_reserved_ids_are_refused(shop: Secured) -> None:
    """Admin grants cannot pose as paid top-ups; purchases cannot take a top-up's record."""
    await _open(shop, wallet=1)
    for reserved in ("topup:x", "rec:base_hosting:1799193600000"):  # the second: a recurring charge
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await shop.admin.Grant(
                admin_pb2.GrantRequest(account_id="shingle", pool_id="credits", amount=USD,
                                       grant_id=reserved),
                metadata=shop.auth("admin"),
            )  # fmt: skip
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "choose another grant_id" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await shop.admin.Purchase(
            admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="auto:x"),
            metadata=shop.auth("owner"),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_notices_reach_the_outbox_with_the_top_up(
    shop: Secured, book: LedgerStore, payer: Worker
) -> None:
    """The plan's $2 low-balance threshold, then auto top-up's $5 in its place; zero: depleted."""
    assert isinstance(book, SqlLedger)
    notifier = Worker(shop.engine.runner.redis, NotifyConsumer(NotifyStore(book)),
                      shop.engine.keys, block_ms=0)  # fmt: skip
    await _open(shop, wallet=5)
    await _spend(shop, 3, "r1")  # $5 -> $2: the plan's low_balance
    await _spend(shop, 2, "r2")  # $2 -> $0
    await notifier.drain()
    sent = await _sent(book)
    assert [(k, d["balance"], d.get("threshold")) for k, d in sent] == [
        ("credit_balance_low", str(2 * USD), str(2 * USD)),
        ("credit_balance_depleted", "0", None),
    ]
    assert sent[0][1]["request_id"] == "r1"
    await shop.engine.grant("shingle", "credits", 20 * USD, "more")
    await shop.admin.SetAutoTopUp(
        topup(enabled=True, threshold=5 * USD, amount=10 * USD), metadata=shop.auth("owner")
    )
    await _spend(shop, 16, "r3")  # $20 -> $4
    await notifier.drain()
    await payer.drain()
    assert [(k, d.get("threshold")) for k, d in (await _sent(book))[2:]] == [
        ("credit_balance_low", str(5 * USD)),
        ("credit_auto_recharge_triggered", str(5 * USD)),
    ]
