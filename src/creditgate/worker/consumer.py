"""What the worker runs: consumers of the event stream, each with its own consumer group.

A consumer gets every event exactly once per group in effect: the worker acknowledges a batch
only after ``apply`` returned, and ``apply`` must skip events it already has (by event id), so
a crash anywhere repeats work but never loses or doubles it. The ledger is one
(``ledger.consumer.LedgerConsumer``), the notifier another (``notify.consumer.NotifyConsumer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.events.schema import Event

__all__ = ["Applied", "Consumer"]


@dataclass(frozen=True, slots=True)
class Applied:
    """What one ``apply`` did: events new to the consumer, and redeliveries it skipped."""

    applied: int
    duplicates: int


class Consumer(Protocol):
    """One consumer of the event stream."""

    @property
    def group(self) -> str:
        """Its Redis consumer group (the same name for every worker running it)."""
        ...

    @property
    def retryable(self) -> tuple[type[BaseException], ...]:
        """Failures of its backend that a retry may cure (an outage): logged, then retried."""
        ...

    async def apply(self, events: Sequence[Event]) -> Applied:
        """Apply a batch, all or nothing; events seen before are skipped."""
        ...

    async def housekeeping(self, now_ms: int) -> None:
        """Called every few seconds with Redis's clock."""
        ...
