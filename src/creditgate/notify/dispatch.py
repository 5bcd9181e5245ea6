"""The dispatcher: sends what the outbox holds, at least once, on a retry schedule.

Each pass leases the due deliveries (``NotifyStore.claim_due``), posts them concurrently, and
records every attempt (status, error, duration) with the delivery's new state in one
transaction. A 2xx delivers; a 410 disables the endpoint (and drops what else was pending for
it); anything else, or no answer, is retried after the next step of ``schedule`` with +-20 %
jitter, and given up (``failed``) once the schedule is spent. A crash between the POST and the
record only repeats the POST when the lease ends, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from prometheus_client import Counter

from creditgate.ledger.store import LedgerError
from creditgate.notify import message
from creditgate.notify.store import Attempt

if TYPE_CHECKING:
    from creditgate.notify.store import Delivery, NotifyStore

log = logging.getLogger("creditgate.notify")
_GONE = 410
_OK = range(200, 300)
_JITTER = 0.2
_ERROR_MAX = 500
ATTEMPTS = Counter(
    "creditgate_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered, retry, failed (schedule spent), gone (410)",
    ["outcome"],
)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    schedule: tuple[
        float, ...
    ]  # seconds after each failed attempt (CREDITGATE_NOTIFY_RETRY_SCHEDULE)
    timeout_s: float = 15.0
    poll_s: float = 1.0
    batch: int = 100
    concurrency: int = 16
    lease_s: float = 0.0  # how long a claimed delivery is hidden from others; 0: timeout + 30 s


def _now_ms() -> int:
    return int(time.time() * 1000)


class Dispatcher:
    """Delivers the outbox of ``store``; ``wake()`` makes it look at once (after an enqueue)."""

    def __init__(self, store: NotifyStore, settings: DispatchSettings) -> None:
        self.store = store
        self.settings = settings
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._limit = asyncio.Semaphore(self.settings.concurrency)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; a ledger outage is logged and waited out."""
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as http:
            while not self._stop.is_set():
                try:
                    busy = await self.run_once(http)
                except LedgerError as exc:
                    log.warning("notify dispatcher: %s; retrying", exc)
                    busy = 0
                except Exception:
                    log.exception("notify dispatcher: unexpected error; retrying")
                    busy = 0
                if busy:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
                self._wake.clear()

    async def run_pass(self) -> int:
        """One pass with a client of its own (``creditgate worker --burst``)."""
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as http:
            return await self.run_once(http)

    async def run_once(self, http: httpx.AsyncClient) -> int:
        """One pass over what is due now; returns how many deliveries it attempted."""
        lease = int((self.settings.lease_s or self.settings.timeout_s + 30) * 1000)
        due = await self.store.claim_due(_now_ms(), lease, self.settings.batch)
        results = await asyncio.gather(
            *(self._deliver(http, d) for d in due), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):  # the row stays leased, then is due again
                log.error("notify dispatcher: recording a delivery failed: %s", r)
        return len(due)

    async def _deliver(self, http: httpx.AsyncClient, d: Delivery) -> None:
        if not d.enabled or not d.url:
            await self.store.drop(d, _now_ms())
            return
        async with self._limit:
            start = time.monotonic()
            status, error = 0, ""
            try:
                hdrs = message.headers(d.notification_id, d.payload, d.secrets, int(time.time()))
                reply = await http.post(d.url, content=d.payload.encode(), headers=hdrs)
                status = reply.status_code
                if status not in _OK:
                    error = reply.text[:_ERROR_MAX]
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = f"{type(exc).__name__}: {exc}"[:_ERROR_MAX]
            duration = int((time.monotonic() - start) * 1000)
        now = _now_ms()
        attempt = Attempt(
            d.notification_id, d.endpoint_id, d.attempts + 1, now, status, error, duration
        )
        if status in _OK:
            await self.store.record(attempt, "delivered", now)
            ATTEMPTS.labels("delivered").inc()
            return
        if status == _GONE:
            log.warning("webhook endpoint %s answered 410 Gone: disabled", d.endpoint_id)
            await self.store.record(attempt, "failed", now, gone=f"410 Gone from {d.url}")
            ATTEMPTS.labels("gone").inc()
            return
        schedule = self.settings.schedule
        if d.attempts >= len(schedule):
            log.warning("webhook %s to %s: giving up after %d attempts", d.notification_id,
                        d.endpoint_id, attempt.attempt)  # fmt: skip
            await self.store.record(attempt, "failed", now)
            ATTEMPTS.labels("failed").inc()
            return
        wait = schedule[d.attempts] * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter, not crypto
        await self.store.record(attempt, "pending", now + int(wait * 1000))
        ATTEMPTS.labels("retry").inc()
