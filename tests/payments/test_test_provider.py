"""The embedded default: the approving test provider, named as such in answers and logs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from auth_kit import secured_sidecar
from creditgate.domain.errors import ConfigError
from creditgate.payments.provider import TEST_PROVIDER, TestProvider
from creditgate.payments.stripe import StripeProvider
from creditgate.v1 import admin_pb2
from creditgate.wiring.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog
    from creditgate.ledger import LedgerStore


async def test_default_provider_says_no_real_money_moves(
    redis: AsyncRedis,
    demo_catalog: Catalog,
    tmp_path: Path,
    book: LedgerStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a payment URL a purchase is approved by the test provider, which says so."""
    caplog.set_level(logging.INFO, logger="creditgate.payments")
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, book):
        await s.engine.create_account("shingle", "shingle_free")
        request = admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="t-1")
        answer = await s.admin.Purchase(request, metadata=s.auth("owner"))
        assert answer.provider == "test provider — no real money moves"
        assert answer.provider_ref.startswith("test_")
        assert answer.balance == 10_000_000
    lines = [r.getMessage() for r in caplog.records if r.name == "creditgate.payments"]
    assert lines
    assert all(TEST_PROVIDER in line for line in lines)
    [row] = await book.purchases("shingle")
    assert row.provider == TEST_PROVIDER


def test_settings_pick_the_provider() -> None:
    """No URL: the test provider; a URL needs its key; with both, the Stripe-style one."""
    assert isinstance(Settings().payment_provider(), TestProvider)
    with pytest.raises(ConfigError, match="CREDITGATE_PAYMENTS_KEY"):
        Settings(payments_url="http://127.0.0.1:9").payment_provider()
    provider = Settings(payments_url="http://127.0.0.1:9/", payments_key="sk").payment_provider()
    assert isinstance(provider, StripeProvider)
    assert provider.name == "payment provider at http://127.0.0.1:9"
