"""A lean, pipelined Redis connection for the hot path (CheckAndConsume).

redis-py spends most of a call on its own machinery: a pool checkout, retry wrappers, encoding
every argument, one write per command. On the hot path creditgate sends one EVALSHA per
decision, most of whose arguments (the pool descriptors of a plan and action) never change.
This connection:

- takes commands already encoded as RESP (the static part is encoded once and cached),
- writes a command at once when nothing is outstanding on the connection, and otherwise queues
  it until every reply already asked for is in, then writes the whole queue at once (adaptive
  pipelining: an idle sidecar adds no delay, a busy one sends one write per Redis round trip
  however many requests arrived meanwhile), and
- parses the replies with hiredis (the C parser redis-py itself uses) and answers the waiting
  futures in order; Redis answers a connection's commands in the order it received them.

Each command is still its own atomic script call; nothing about atomicity, ordering or
idempotency changes. Errors come back as ``hiredis.ReplyError`` objects in their slot. A lost
connection fails every pending call with ConnectionError; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis

if TYPE_CHECKING:
    from collections.abc import Sequence


def encode(parts: Sequence[bytes | str | int]) -> bytes:
    """RESP bulk strings for ``parts`` (without the array header)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, int):
            data = str(part).encode()
        else:
            data = part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def command(count: int, body: bytes) -> bytes:
    """A complete RESP command from ``count`` pre-encoded bulk strings."""
    return b"*%d\r\n%s" % (count, body)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.outstanding = 0  # commands written whose replies have not arrived
        self.queued: list[bytes] = []  # commands waiting for the outstanding replies

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(
        self, payloads: Sequence[bytes], futures: Sequence[asyncio.Future[Any]], deadline: float
    ) -> None:
        """Write now when nothing is outstanding; otherwise queue behind the outstanding ones."""
        if not payloads:
            return
        self.waiting.extend(futures)
        self.deadlines.extend([deadline] * len(futures))
        if self.outstanding or self.queued:
            self.queued.extend(payloads)
            return
        self.outstanding = len(payloads)
        if self.transport is not None and self.lost is None:
            self.transport.write(payloads[0] if len(payloads) == 1 else b"".join(payloads))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            future = waiting.popleft()
            self.deadlines.popleft()
            self.outstanding -= 1
            if not future.done():
                future.set_result(reply)
        if not self.outstanding and self.queued:
            # Everything asked for is answered: what queued up meanwhile goes in one write.
            batch, self.queued = b"".join(self.queued), []
            self.outstanding = len(self.waiting)
            if self.transport is not None and self.lost is None:
                self.transport.write(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)
        self.deadlines.clear()
        self.queued.clear()
        self.outstanding = 0

    def overdue(self, now: float) -> bool:
        return bool(self.deadlines) and self.deadlines[0] < now


class FastRedis:
    """One pipelined connection; ``call`` sends a pre-encoded command and awaits its reply."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._url = url
        self._timeout = timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            url = urlparse(self._url)
            query = parse_qs(url.query)
            if url.scheme == "unix":
                coro = loop.create_unix_connection(_Protocol, url.path)
            else:
                context = ssl.create_default_context() if url.scheme == "rediss" else None
                coro = loop.create_connection(
                    _Protocol, url.hostname or "127.0.0.1", url.port or 6379, ssl=context
                )
            _, proto = await asyncio.wait_for(coro, self._timeout)
            setup = []
            if url.password:
                user = [unquote(url.username)] if url.username else []
                setup.append(["AUTH", *user, unquote(url.password)])
            db = (url.path.strip("/") if url.scheme != "unix" else "") or query.get("db", ["0"])[0]
            if db and db != "0":
                setup.append(["SELECT", db])
            self._proto = proto
            for parts in setup:
                reply = await self._send(command(len(parts), encode(parts)))
                if isinstance(reply, hiredis.ReplyError):
                    msg = f"Redis refused {parts[0]}: {reply}"
                    raise ConnectionError(msg)
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = asyncio.create_task(self._watch())
            return proto

    async def _watch(self) -> None:
        """Abort a connection whose oldest reply is overdue.

        Every pending call then fails (UNAVAILABLE) instead of hanging; the next call reconnects.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self._timeout / 4, 0.25))
            proto = self._proto
            if proto is None:
                return
            if proto.lost is None and proto.overdue(loop.time()):
                proto.lost = TimeoutError(f"Redis did not answer within {self._timeout} s")
                if proto.transport is not None:
                    proto.transport.abort()

    def _send(self, payload: bytes) -> asyncio.Future[Any]:
        proto = self._proto
        assert proto is not None  # noqa: S101 - _connect ran first
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        proto.send((payload,), (future,), loop.time() + self._timeout)
        return future

    async def call(self, payload: bytes) -> Any:  # noqa: ANN401 - a Redis reply
        """Send one complete RESP command; its reply, or a ReplyError object for an error."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            await self._connect()
        return await self._send(payload)

    async def call_many(self, payloads: Sequence[bytes]) -> list[Any]:
        """Send several commands in one write; their replies in order."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            await self._connect()
        proto = self._proto
        assert proto is not None  # noqa: S101 - connected above
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in payloads]
        proto.send(payloads, futures, loop.time() + self._timeout)
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
