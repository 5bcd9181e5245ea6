"""Payments that Redis lost before they were credited are credited once (payments/recovery.py).

Redis is wiped (FLUSHDB and SCRIPT FLUSH, an empty restart) at the worst moment: after the
provider charged and before the ledger worker applied the Grant, or after a charge started an
auto top-up and before the payer read its event. Everything else is real: the sidecar behind
tokens, the local payment server, the SQLite ledger, hydration from it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from creditgate.ledger.consumer import LedgerConsumer
from creditgate.ledger.hydrate import install_hydration
from creditgate.ledger.reconcile import Reconciler
from creditgate.ledger.sql import SqlLedger
from creditgate.payments.recovery import PaymentRecovery
from creditgate.payments.stripe import StripeProvider
from creditgate.payments.topups import TopUpConsumer
from creditgate.v1 import admin_pb2, quota_pb2
from creditgate.worker import Worker
from payments_kit import KEY

if TYPE_CHECKING:
    from auth_kit import Secured
    from creditgate.ledger import LedgerStore
    from payments_kit import PaymentServer

USD = 1_000_000
LATER = 200_000  # ms: past the recovery's settle time


async def _ledger(shop: Secured, book: LedgerStore) -> None:
    """The ledger worker applies everything written so far."""
    await Worker(shop.engine.runner.redis, LedgerConsumer(book), shop.engine.keys,
                 block_ms=0).drain()  # fmt: skip


async def _lose_redis(shop: Secured) -> None:
    redis = shop.engine.runner.redis
    await redis.flushdb()
    await redis.script_flush()


def _now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def recovery(shop: Secured, payments: PaymentServer, book: LedgerStore) -> PaymentRecovery:
    assert isinstance(book, SqlLedger)
    install_hydration(shop.engine, book)
    payer = TopUpConsumer(shop.engine, StripeProvider(payments.url, KEY, timeout_s=2.0), book)
    return PaymentRecovery(shop.engine, book, payer)


async def _balance(shop: Secured, pool: str) -> int:
    bal = await shop.quota.GetBalance(
        quota_pb2.GetBalanceRequest(account_id="shingle"), metadata=shop.auth("owner")
    )
    return {p.pool_id: p.balance for p in bal.pools}[pool]


async def test_a_purchase_paid_but_lost_with_redis_is_credited_once(
    shop: Secured, payments: PaymentServer, book: LedgerStore, recovery: PaymentRecovery
) -> None:
    await shop.engine.create_account("shingle", "shingle_free")
    await _ledger(shop, book)
    await shop.admin.Purchase(
        admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="buy-1", amount=25 * USD),
        metadata=shop.auth("owner"),
    )
    assert payments.charged("purchase:buy-1") == 1
    await _lose_redis(shop)  # the Grant and its event were in Redis only
    assert await recovery.run_pass(_now() - LATER) == 0  # too recent: the worker may be behind
    assert await recovery.run_pass(_now() + LATER) == 1
    assert await _balance(shop, "credits") == 25 * USD
    assert await recovery.run_pass(_now() + LATER) == 0  # Redis answers the grant id: once
    await _ledger(shop, book)
    assert await recovery.run_pass(_now() + LATER) == 0  # the ledger has the grant now
    assert await _balance(shop, "credits") == 25 * USD
    assert payments.charged("purchase:buy-1") == 1
    report = await Reconciler(shop.engine.runner.redis, book, shop.engine.keys).check(
        progress=False
    )
    assert report == {}


async def test_a_purchase_whose_grant_reached_the_ledger_is_left_alone(
    shop: Secured, book: LedgerStore, recovery: PaymentRecovery
) -> None:
    await shop.engine.create_account("shingle", "shingle_free")
    await shop.admin.Purchase(
        admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="buy-2"),
        metadata=shop.auth("owner"),
    )
    await _ledger(shop, book)
    await _lose_redis(shop)
    assert await recovery.run_pass(_now() + LATER) == 0
    assert await _balance(shop, "credits") == 10 * USD  # the plan's default, from the ledger


async def test_a_top_up_whose_event_was_lost_is_paid(
    shop: Secured, payments: PaymentServer, book: LedgerStore, recovery: PaymentRecovery
) -> None:
    owner = shop.auth("owner")
    await shop.engine.create_account("shingle", "shingle_pro")
    await shop.engine.grant("shingle", "credits", 20 * USD, "seed")
    used = quota_pb2.CheckAndConsumeRequest(
        account_id="shingle", action="shingle.api", quantity=100_000, request_id="allowance"
    )
    assert (await shop.quota.CheckAndConsume(used, metadata=shop.auth("service"))).allowed
    await shop.admin.SetAutoTopUp(
        admin_pb2.SetAutoTopUpRequest(
            account_id="shingle", enabled=True, threshold=5 * USD, amount=10 * USD
        ),
        metadata=owner,
    )
    spend = quota_pb2.CheckAndConsumeRequest(
        account_id="shingle", action="shingle.api", quantity=16_000, request_id="r1"
    )
    assert (await shop.quota.CheckAndConsume(spend, metadata=shop.auth("service"))).allowed
    state = await shop.admin.GetAutoTopUp(
        admin_pb2.GetAutoTopUpRequest(account_id="shingle"), metadata=owner
    )
    assert state.state == "in_flight"
    await _ledger(shop, book)  # the ledger has the event and the mark; the payer never ran
    await _lose_redis(shop)
    assert await recovery.run_pass(_now() + LATER) == 1
    assert payments.charged(f"topup:{state.topup_id}") == 1
    assert await _balance(shop, "credits") == 14 * USD
    after = await shop.admin.GetAutoTopUp(
        admin_pb2.GetAutoTopUpRequest(account_id="shingle"), metadata=owner
    )
    assert after.state == "idle"
    assert await recovery.run_pass(_now() + LATER) == 0
    await _ledger(shop, book)
    assert await recovery.run_pass(_now() + LATER) == 0
    assert payments.charged(f"topup:{state.topup_id}") == 1
