"""The notifier as a consumer of the event stream (``worker.consumer.Consumer``).

It has its own consumer group: it reads the ``notice`` events the Lua scripts append and
writes each batch's notifications into the outbox in one ledger-database transaction,
idempotent on the notification id (derived from the event id and request id). A redelivered
batch is therefore a no-op, and the ledger consumer neither waits for it nor knows of it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from creditgate.events.schema import EventError, decode_notice
from creditgate.ledger.store import LedgerError
from creditgate.notify import message
from creditgate.notify.store import NewNotification
from creditgate.worker.consumer import Applied

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from creditgate.events.schema import Event
    from creditgate.notify.store import NotifyStore

__all__ = ["GROUP", "NotifyConsumer"]

GROUP = "creditgate-notify"
log = logging.getLogger("creditgate.notify")


class NotifyConsumer:
    group = GROUP
    retryable: tuple[type[BaseException], ...] = (LedgerError,)

    def __init__(self, store: NotifyStore, on_new: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_new = on_new  # the dispatcher's wake(), when it runs in this process

    async def apply(self, events: Sequence[Event]) -> Applied:
        items = []
        for e in events:
            try:
                n = decode_notice(e)
            except EventError:
                log.exception("notify: skipping a malformed notice")
                continue
            if n is not None:
                items.append(
                    NewNotification(
                        n.notification_id, e.account, n.kind, e.event_id, message.notice_body(n),
                        e.time_ms,
                    )
                )  # fmt: skip
        new = await self.store.enqueue(items)
        if new and self.on_new is not None:
            self.on_new()
        return Applied(new, len(items) - new)

    async def housekeeping(self, now_ms: int) -> None:
        """Nothing: the dispatcher owns the outbox."""
