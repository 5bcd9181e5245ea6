"""The ledger as a consumer of the event stream (``worker.consumer.Consumer``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from creditgate.ledger.store import LedgerError
from creditgate.worker.consumer import Applied

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.events.schema import Event
    from creditgate.ledger.store import LedgerStore

__all__ = ["GROUP", "LedgerConsumer"]

GROUP = "creditgate-ledger"
_DAY_MS = 86_400_000
_PRUNE_EVERY_S = 3600


class LedgerConsumer:
    """Writes each batch in one database transaction; forgets expired idempotency records."""

    group = GROUP
    retryable: tuple[type[BaseException], ...] = (LedgerError,)

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._next_prune = 0.0

    async def apply(self, events: Sequence[Event]) -> Applied:
        result = await self.store.apply(events)
        return Applied(result.applied, result.duplicates)

    async def housekeeping(self, now_ms: int) -> None:
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + _PRUNE_EVERY_S
            await self.store.prune_records(now_ms - _DAY_MS)
