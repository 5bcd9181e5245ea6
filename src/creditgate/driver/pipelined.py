"""A lean, pipelined Redis connection for the hot path (CheckAndConsume): ``FastRedis``.

redis-py spends most of a call on its own machinery: a pool checkout, retry wrappers, encoding
every argument, one write per command. On the hot path creditgate sends one EVALSHA per
decision, most of whose arguments (the pool descriptors of a plan and action) never change.
This connection takes commands already encoded as RESP (the static part is encoded once and
cached), pipelines them adaptively (an idle sidecar adds no delay, a busy one sends one write
per Redis round trip) and, with a ``Combiner`` (the engine), sends queued charges of one account
as one script call. How is in driver/wire.py, which holds what goes over the connection: RESP
encoding, writing, queueing, combining, and answering the replies in order.

This module holds the connection's handling: opening it (TCP, a unix socket or TLS; AUTH and
SELECT from the URL), the watchdog that aborts it when a reply is overdue, the calls, and
``HotPath``, the engine's view of it.

Each charge is still atomic on its own (a combined command is one atomic script run), and
nothing about ordering or idempotency changes. A lost connection fails every pending call with
ConnectionError; the next call reconnects.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import hiredis

from creditgate.driver.connect import tls_context
from creditgate.driver.wire import Item, WireProtocol, command, encode

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    from creditgate.driver.wire import Combiner


class HotPath(Protocol):
    """What the engine needs of a pipelined connection.

    ``FastRedis``, or ``ClusterFastRedis`` (driver/cluster.py): one per master of a Redis Cluster.
    """

    def combine_with(self, combiner: Combiner) -> None: ...

    @property
    def combined(self) -> int: ...

    async def call(
        self,
        payload: bytes,
        group: tuple[Hashable, ...] | None = None,
        member: Any = None,  # noqa: ANN401 - the combiner's own
    ) -> Any: ...  # noqa: ANN401 - a Redis reply

    async def call_many(
        self,
        payloads: Sequence[bytes],
        groups: Sequence[tuple[tuple[Hashable, ...] | None, Any] | None] = (),
    ) -> list[Any]: ...

    async def aclose(self) -> None: ...


class FastRedis:
    """One pipelined connection; ``call`` sends a pre-encoded command and awaits its reply."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, wait_replicas: int = 0, wait_timeout_ms: int = 100
    ) -> None:
        """A connection to ``url``, opened on the first call.

        ``wait_replicas`` > 0: a reply is given only once that many replicas have its write
        (WAIT after each write that calls a script, ``wait_timeout_ms`` at most; driver/wire.py).
        """
        self._url = url
        self._wait = (wait_replicas, wait_timeout_ms)
        self._tls = tls_context(url)  # rediss://: redis-py's own context for the same URL
        self._timeout = timeout
        self._proto: WireProtocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._combiner: Combiner | None = None

    async def _connect(self) -> WireProtocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            url = urlparse(self._url)
            query = parse_qs(url.query)
            if url.scheme == "unix":
                coro = loop.create_unix_connection(WireProtocol, url.path)
            else:
                coro = loop.create_connection(
                    WireProtocol, url.hostname or "127.0.0.1", url.port or 6379, ssl=self._tls
                )
            _, proto = await asyncio.wait_for(coro, self._timeout)
            proto.combiner = self._combiner
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
            proto.wait_for(*self._wait)  # after AUTH and SELECT, which need no replica
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = asyncio.create_task(self._watch())
            return proto

    async def _watch(self) -> None:
        """Abort a connection whose oldest reply is overdue.

        Every pending call then fails instead of hanging; the next call reconnects. It looks
        every 25 ms at most, so a call fails within its timeout + 25 ms (the drills hold it to
        + 50 ms); a wake-up that finds nothing overdue costs a few microseconds.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self._timeout / 20, 0.025))
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
        proto.send((Item(payload, future, loop.time() + self._timeout),))
        return future

    def combine_with(self, combiner: Combiner) -> None:
        """Combine queued commands of one group with ``combiner`` (see ``call``)."""
        self._combiner = combiner
        if self._proto is not None:
            self._proto.combiner = combiner

    @property
    def combined(self) -> int:
        """How many commands the current connection has sent inside combined commands."""
        return self._proto.combined if self._proto is not None else 0

    async def call(
        self,
        payload: bytes,
        group: tuple[Hashable, ...] | None = None,
        member: Any = None,  # noqa: ANN401 - the combiner's own
    ) -> Any:  # noqa: ANN401 - a Redis reply
        """Send one complete RESP command; its reply, or a ReplyError object for an error.

        A command with a ``group`` (its account first) that queues behind outstanding ones may
        be sent inside one combined command (``combine_with``) with the commands of the same
        group queued next to it; the reply is the same either way.
        """
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        proto.send((Item(payload, future, loop.time() + self._timeout, group, member),))
        return await future

    async def call_many(
        self,
        payloads: Sequence[bytes],
        groups: Sequence[tuple[tuple[Hashable, ...] | None, Any] | None] = (),
    ) -> list[Any]:
        """Send several commands in one write; their replies in order.

        ``groups`` gives each command's (group, member) as ``call`` takes them, or None.
        """
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        futures = [loop.create_future() for _ in payloads]
        items = [
            Item(p, f, deadline, *(g or (None, None)))
            for p, f, g in zip(payloads, futures, groups or [None] * len(payloads), strict=True)
        ]
        proto.send(items)
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
