"""Open the ledger a URL names: the one place that knows both backends.

It lives apart from ``store`` (the interface both backends implement), so that neither backend
imports a module that imports it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from creditgate.ledger.store import LedgerStore


def without_password(url: str) -> str:
    """``url`` without its user and password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


async def open_ledger(url: str, *, migrate: bool = False) -> LedgerStore:
    """Connect to the ledger named by ``url``; run migrations first when asked."""
    store: LedgerStore
    if url.startswith("sqlite:"):
        from creditgate.ledger.sqlite import SqliteLedger  # noqa: PLC0415 - optional backend

        store = await SqliteLedger.connect(url)
    elif url.startswith(("postgresql:", "postgres:")):
        from creditgate.ledger.postgres import PostgresLedger  # noqa: PLC0415 - optional backend

        store = await PostgresLedger.connect(url)
    else:
        msg = f"ledger URL {url!r}: use sqlite:///path or postgresql://..."
        raise ValueError(msg)
    if migrate:
        await store.migrate()
    return store
