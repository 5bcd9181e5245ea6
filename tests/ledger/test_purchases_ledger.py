"""Purchases on both ledger backends: the purchases row, the grant's movement, no double charge.

Through gRPC with the local payment server (tests/payments_kit.py). The concurrency case also
runs a second ``Purchases`` on the same Redis and ledger, as a second sidecar would: its
in-process lock does not see the first one's, so only the provider's idempotency key and the
ledger's claim keep the charge single.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from auth_kit import secured_sidecar
from creditgate.domain.errors import FailedPreconditionError
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.payments.purchases import Purchases
from creditgate.payments.stripe import StripeProvider
from creditgate.v1 import admin_pb2
from creditgate.worker import Worker
from payments_kit import KEY, PaymentServer, serve_payments

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger
    from creditgate.domain.catalog import Catalog

USD = 1_000_000


@pytest.fixture
def payments() -> Iterator[PaymentServer]:
    yield from serve_payments()


async def test_purchases_are_recorded_once_with_their_reference(
    ledger: Ledger,
    redis: AsyncRedis,
    demo_catalog: Catalog,
    tmp_path: Path,
    payments: PaymentServer,
) -> None:
    """Approved and declined rows; 40 concurrent calls over two sidecars charge once."""
    provider = StripeProvider(payments.url, KEY, timeout_s=2.0)
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, ledger.store, provider):
        await s.engine.create_account("shingle", "shingle_pro")
        owner = s.auth("owner")
        request = admin_pb2.PurchaseRequest(
            account_id="shingle", purchase_id="p-1", amount=USD * 30
        )
        other = Purchases(s.engine, provider, ledger.store)  # a second sidecar's purchases
        answers = await asyncio.gather(
            *(s.admin.Purchase(request, metadata=owner) for _ in range(20)),
            *(other.purchase("shingle", "p-1", USD * 30) for _ in range(20)),
        )
        refs = {a.provider_ref for a in answers[:20]} | {
            a.record.provider_ref for a in answers[20:]
        }
        assert refs == {"pi_test_1"}
        assert payments.charged("purchase:p-1") == 1
        payments.mode = "decline"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.admin.Purchase(
                admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="p-2"), metadata=owner
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(FailedPreconditionError, match="insufficient_funds"):
            await other.purchase("shingle", "p-2")
        state = await s.engine.balance("shingle")
        assert {p.pool_id: p.balance for p in state.pools}["credits"] == 30 * USD
        await Worker(redis, LedgerConsumer(ledger.store), s.engine.keys, block_ms=0).drain()
    await provider.close()
    rows = {r.purchase_id: r for r in await ledger.store.purchases("shingle")}
    assert (rows["p-1"].status, rows["p-1"].amount, rows["p-1"].provider_ref) == (
        "succeeded",
        30 * USD,
        "pi_test_1",
    )
    assert rows["p-1"].provider == f"payment provider at {payments.url}"
    assert (rows["p-2"].status, rows["p-2"].amount, rows["p-2"].provider_ref) == (
        "failed",
        10 * USD,
        "pi_test_2",
    )
    assert len(payments.charges) == 1
    # The money's movement reached the ledger once, as one grant into the balance pool.
    assert (await ledger.store.movement_sums("shingle"))["credits"] == 30 * USD
    assert (await ledger.store.pool_balances("shingle"))["credits"] == 30 * USD
