"""The worker: shard streams -> one consumer (``consumer.Consumer``), batch by batch.

Delivery is at least once: entries are acknowledged (XACK) only after the consumer applied the
batch, and the consumer skips event ids it already has, so a crash anywhere repeats work but
never loses or doubles it. Entries a dead worker left pending are claimed after
``claim_idle_ms``. The ledger is the consumer today (``creditgate worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.events.schema import Event, EventError, parse_entry
from creditgate.worker import metrics, streams

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from prometheus_client import Counter
    from redis.asyncio import Redis

    from creditgate.engine.keys import KeySpace
    from creditgate.worker.consumer import Consumer

log = logging.getLogger("creditgate.worker")
Entry = tuple[str, bytes, dict[bytes, bytes] | None]  # stream, entry id, fields
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def on_signal(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM/SIGINT (where the loop can: the main thread on Unix)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)


def _by_stream(reply: Any) -> list[tuple[str, list[Any]]]:  # noqa: ANN401 - RESP2 or RESP3
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    out = []
    for name, entries in items:
        stream = name.decode() if isinstance(name, bytes) else name
        out.append((stream, entries[0] if entries and isinstance(entries[0], list) else entries))
    return out


class Worker:
    """Moves events from the shard streams of ``keys`` into ``consumer``."""

    def __init__(  # noqa: PLR0913 - every knob is a keyword with the Settings default
        self,
        redis: Redis,
        consumer: Consumer,
        keys: KeySpace,
        *,
        batch: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        name: str = "",
        per_stream: bool | None = None,
        housekeeping_s: float = 5.0,
        streams: Sequence[str] | None = None,
        signals: bool = True,
        linger_ms: int = 0,
        metered: bool = True,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.group = consumer.group
        self.retryable: tuple[type[BaseException], ...] = (*RETRYABLE, *consumer.retryable)
        self.streams = list(keys.streams() if streams is None else streams)  # a lane: a subset
        self.signals = signals  # False: a lanes.Lanes handles SIGTERM/SIGINT for all its lanes
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        # Redis Cluster: the streams live on different nodes, so each is read by a call of its
        # own (None: whenever the client is a cluster client).
        self.per_stream = isinstance(redis, RedisCluster) if per_stream is None else per_stream
        self.housekeeping_s = housekeeping_s
        # After a short batch, wait this long before reading again: the next batch gathers more
        # events, so the per-batch cost (a commit, an XACK) is shared; it adds at most this to
        # the lag.
        self.linger_ms = linger_ms
        # The creditgate_ledger_* metrics are the ledger's: another consumer (the notifier)
        # runs unmetered, so that its group's lag and counts never pass for the ledger's.
        self.metered = metered
        self.label = "ledger worker" if metered else f"{self.group} worker"
        self.last_read = 0
        self._own_pending = True  # after a start or a failed batch, retry our pending entries
        self._next_claim = 0.0
        self._next_housekeeping = 0.0
        self._stop = asyncio.Event()

    # --- set-up and shutdown --------------------------------------------------------------

    async def setup(self) -> None:
        """Create the consumer group on every stream (and the stream, if needed)."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def stop(self) -> None:
        """Finish the current batch, then return from ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        """Apply batches until ``stop()`` or SIGTERM/SIGINT; outages are waited out.

        ``handle_signals=False``: the caller stops it (it runs several consumers).
        """
        if self.signals and handle_signals:
            on_signal(self.stop)
        backoff = 0.2
        while not self.stopping:
            try:
                await self.run_once()
                backoff = 0.2
                if self.linger_ms and 0 < self.last_read < self.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.linger_ms / 1000)
            except self.retryable as exc:
                self._count(metrics.FAILURES)
                log.warning("%s: %s; retrying in %.1f s", self.label, exc, backoff)
            except Exception:
                # A bug or a driver error nobody foresaw: the events stay pending in Redis, so
                # retrying loses nothing, while a dead worker would let the ledger fall behind
                # unseen (the sidecar that runs it keeps serving).
                self._count(metrics.FAILURES)
                log.exception("%s: unexpected error; retrying in %.1f s", self.label, backoff)
            else:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)

    async def drain(self) -> int:
        """Burst mode: apply everything there is (claiming stale entries too), then return."""
        total = 0
        self._next_claim = 0.0
        await self.setup()
        while True:
            total += await self.run_once(block=False)
            if self.last_read == 0:
                await self.housekeeping()
                return total

    async def run_once(self, *, block: bool = True) -> int:
        """One read, one ledger transaction, one XACK per stream; returns events applied."""
        try:
            entries = await self._collect(block=block)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("%s: consumer group missing (Redis restarted?); recreating", self.label)
            await self.setup()
            self._own_pending = True
            self.last_read = -1  # nothing read, but there may be: not "drained"
            return 0
        self.last_read = len(entries)
        applied = await self._apply(entries) if entries else 0
        if time.monotonic() >= self._next_housekeeping:
            await self.housekeeping()
        return applied

    async def _collect(self, *, block: bool) -> list[Entry]:
        entries: list[Entry] = []
        if self._own_pending:
            entries = await self._read("0", block=False)
            self._own_pending = bool(entries)
        if not entries and time.monotonic() >= self._next_claim:
            entries = await self._claim()
            self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
        if not entries:
            entries = await self._read(">", block=block)
        return entries

    async def _read(self, start: str, *, block: bool) -> list[Entry]:
        wait = self.block_ms if block and self.block_ms > 0 else None
        if not self.per_stream:
            reply = await self.redis.xreadgroup(
                self.group,
                self.name,
                dict.fromkeys(self.streams, start),
                count=self.batch,
                block=wait,
            )
            return [(s, e[0], e[1]) for s, es in _by_stream(reply) for e in es]
        out: list[Entry] = []
        for stream in self.streams:
            reply = await self.redis.xreadgroup(
                self.group, self.name, {stream: start}, count=self.batch
            )
            out += [(s, e[0], e[1]) for s, es in _by_stream(reply) for e in es]
        if not out and wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait / 1000)
        return out

    async def _claim(self) -> list[Entry]:
        out: list[Entry] = []
        for stream in self.streams:
            reply = await self.redis.xautoclaim(
                stream, self.group, self.name, self.claim_idle_ms, start_id="0-0", count=self.batch
            )
            claimed = [(stream, e[0], e[1]) for e in reply[1] if e]
            if claimed:
                log.info("%s: claimed %d stale entries of %s", self.label, len(claimed), stream)
            out += claimed
        return out

    async def _apply(self, entries: list[Entry]) -> int:
        events: list[Event] = []
        for stream, eid, fields in entries:
            if fields is None:
                continue  # deleted from the stream while pending: nothing left to apply
            try:
                events.append(parse_entry(stream, eid, fields))
            except EventError:
                self._count(metrics.INVALID)
                log.exception("%s: skipping an entry that is not a v1 event", self.label)
        try:
            result = await self.consumer.apply(events)
        except BaseException:
            self._own_pending = True
            raise
        acks: dict[str, list[bytes]] = {}
        for stream, eid, _ in entries:
            acks.setdefault(stream, []).append(eid)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in acks.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()
        self._count(metrics.APPLIED, result.applied)
        self._count(metrics.DUPLICATES, result.duplicates)
        return result.applied

    def _count(self, counter: Counter, n: float = 1) -> None:
        if self.metered:
            counter.inc(n)

    # --- housekeeping ---------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Trim acknowledged entries, refresh the lag gauge, forget old records and consumers."""
        self._next_housekeeping = time.monotonic() + self.housekeeping_s
        sec, usec = await self.redis.time()
        now_ms = sec * 1000 + usec // 1000
        for stream in self.streams:
            try:
                await streams.trim(self.redis, stream)
                oldest = await streams.oldest_unapplied(self.redis, stream, self.group)
                if self.metered:
                    lag = max(0, now_ms - oldest[0]) / 1000 if oldest else 0
                    metrics.LAG.labels(stream).set(lag)
                await streams.forget_dead_consumers(self.redis, stream, self.group)
            except ResponseError as exc:  # the stream or group vanished (Redis restarted)
                log.warning("%s: housekeeping of %s: %s", self.label, stream, exc)
        await self.consumer.housekeeping(now_ms)
