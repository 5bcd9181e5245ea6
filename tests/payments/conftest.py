"""Fixtures of the purchase tests: the local payment server and a sidecar charging through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from auth_kit import Secured, secured_sidecar
from creditgate.ledger import open_ledger
from creditgate.payments.stripe import StripeProvider
from payments_kit import KEY, PaymentServer, serve_payments

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog
    from creditgate.ledger import LedgerStore

CLIENT_TIMEOUT_S = 1.0  # the payment server's ``timeout`` mode answers after 3 s


@pytest.fixture
def payments() -> Iterator[PaymentServer]:
    yield from serve_payments()


@pytest_asyncio.fixture
async def book(tmp_path: Path) -> AsyncIterator[LedgerStore]:
    store = await open_ledger(f"sqlite:///{tmp_path}/ledger.db", migrate=True)
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def shop(
    redis: AsyncRedis,
    demo_catalog: Catalog,
    tmp_path: Path,
    payments: PaymentServer,
    book: LedgerStore,
) -> AsyncIterator[Secured]:
    """The demo catalog behind tokens, a SQLite ledger, charging the local payment server."""
    provider = StripeProvider(payments.url, KEY, timeout_s=CLIENT_TIMEOUT_S)
    try:
        async for s in secured_sidecar(redis, demo_catalog, tmp_path, book, provider):
            yield s
    finally:
        await provider.close()
