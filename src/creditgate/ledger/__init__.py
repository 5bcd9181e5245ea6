"""The durable ledger: every event of the Redis streams, and a mirror that can rebuild Redis."""

from creditgate.events.schema import Event, EventError, parse_entry
from creditgate.ledger.open import open_ledger
from creditgate.ledger.store import (
    AccountMirror,
    ApplyResult,
    LedgerError,
    LedgerStore,
    Page,
    PoolTotals,
    Transaction,
    Usage,
)

__all__ = [
    "AccountMirror",
    "ApplyResult",
    "Event",
    "EventError",
    "LedgerError",
    "LedgerStore",
    "Page",
    "PoolTotals",
    "Transaction",
    "Usage",
    "open_ledger",
    "parse_entry",
]
