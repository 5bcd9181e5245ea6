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
  futures in order; Redis answers a connection's commands in the order it received them, and
- with a ``Combiner`` (the engine), sends queued charges of one account and request shape as one
  combined command (consume_batch.lua) in place of one script call each. The charges it did
  not run (it stops at the first it cannot answer on the fast path) are sent on their own right
  after it, and the account's later commands wait for its reply, so an account's commands still
  run in the order they were sent.

Each charge is still atomic on its own (a combined command is one atomic script run), and
nothing about ordering or idempotency changes. Errors come back as ``hiredis.ReplyError``
objects in their slot. A lost connection fails every pending call with ConnectionError; the next
call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

import hiredis

from creditgate.driver.connect import tls_context

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence


class UnansweredError(ConnectionError):
    """The command was written to Redis and its reply never came: it may have run."""


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


# Commands queued behind outstanding ones that may be sent as one combined command: consecutive
# commands of the same group (an account and request shape), at most this many at a time. A
# combined call holds Redis about as long as the same charges pipelined one by one do.
MAX_COMBINED = 100


class Combiner(Protocol):
    """Turns consecutive queued commands of one group into one command (engine.Engine's).

    ``combine(members)`` is the combined command for the members of two or more commands; its
    reply is a list of the first m commands' replies, in order (0 <= m <= n); the other commands
    were not run and are sent as they are next. ``load`` is sent first when the combined
    command's script is missing (NOSCRIPT, after a Redis restart).
    """

    load: bytes

    def combine(self, members: Sequence[Any]) -> bytes: ...


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


class _Item:
    """A command not yet answered: as written, or to be combined with its neighbours."""

    __slots__ = ("account", "deadline", "future", "group", "member", "payload")

    def __init__(
        self,
        payload: bytes,
        future: asyncio.Future[Any],
        deadline: float,
        group: tuple[Hashable, ...] | None = None,
        member: Any = None,  # noqa: ANN401 - the combiner's own
    ) -> None:
        self.payload = payload
        self.future = future
        self.deadline = deadline
        self.group = group  # (account, ...): commands that may be combined
        self.account = group[0] if group else None  # None: not known (no group)
        self.member = member


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (a connection lost under it needs no log line)."""
    if not future.cancelled():
        future.exception()


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        # What each written command answers: one item, or the items a combined command ran.
        self.waiting: collections.deque[_Item | list[_Item]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.outstanding = 0  # commands written whose replies have not arrived
        self.queued: list[_Item] = []  # commands waiting for the outstanding replies
        self.combiner: Combiner | None = None
        self.combined = 0  # commands sent inside combined ones (a counter for tests and bench)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, items: Sequence[_Item]) -> None:
        """Write now when nothing is outstanding; otherwise queue behind the outstanding ones."""
        if not items:
            return
        if self.outstanding or self.queued:
            self.queued.extend(items)
            return
        self._write(items)

    def _write(self, items: Sequence[_Item]) -> None:
        """Write ``items`` at once, runs of one group as a combined command."""
        if len(items) == 1 or self.combiner is None:
            for item in items:
                self.waiting.append(item)
                self.deadlines.append(item.deadline)
            out = [item.payload for item in items]
        else:
            out = self._combine(items)
        self.outstanding = len(out)
        if self.transport is not None and self.lost is None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _combine(self, items: Sequence[_Item]) -> list[bytes]:
        """The commands to write for ``items``, runs of one group combined.

        Once a combined command is in the write, the commands after it for the same account (or
        for an account not known here) wait in the queue for its reply: the charges it does not
        run are sent next, in their place, so an account's commands run in the order they were
        sent. Other accounts' commands go in the same write.
        """
        assert self.combiner is not None  # noqa: S101 - checked by the caller
        out: list[bytes] = []
        held: list[_Item] = []
        behind: set[Hashable] = set()  # accounts with a combined command in this write
        i, n = 0, len(items)
        while i < n:
            item = items[i]
            if behind and (item.account is None or item.account in behind):
                held.append(item)
                i += 1
                continue
            group = item.group
            j = i + 1
            if group is not None:
                limit = min(n, i + MAX_COMBINED)
                while j < limit and items[j].group == group:
                    j += 1
            if j - i > 1:
                run = list(items[i:j])
                out.append(self.combiner.combine([it.member for it in run]))
                self.waiting.append(run)
                self.combined += len(run)
                behind.add(item.account)
            else:
                out.append(item.payload)
                self.waiting.append(item)
            self.deadlines.append(item.deadline)
            i = j
        self.queued[:0] = held
        return out

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        again: list[_Item] = []
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            entry = waiting.popleft()
            self.deadlines.popleft()
            self.outstanding -= 1
            if isinstance(entry, _Item):
                if not entry.future.done():
                    entry.future.set_result(reply)
            else:
                again += self._answer_combined(entry, reply)
        if again:
            # Not run by their combined command: sent as they are, ahead of what queued since.
            self.queued[:0] = again
        if not self.outstanding and self.queued:
            # Everything asked for is answered: what queued up meanwhile goes in one write.
            batch, self.queued = self.queued, []
            self._write(batch)

    def _answer_combined(self, run: list[_Item], reply: Any) -> list[_Item]:  # noqa: ANN401
        """Answer the commands a combined command ran; the others, to send as they are."""
        if isinstance(reply, list):
            for item, answer in zip(run, reply, strict=False):
                if not item.future.done():
                    item.future.set_result(answer)
            rest = run[len(reply) :]
        else:  # an error reply: the combined script is missing (NOSCRIPT), or it failed
            rest = run
        again = [_Item(it.payload, it.future, it.deadline) for it in rest if not it.future.done()]
        if (
            again
            and isinstance(reply, hiredis.ReplyError)
            and str(reply).startswith("NOSCRIPT")
            and self.combiner is not None
        ):
            loaded: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            loaded.add_done_callback(_retrieved)  # nobody awaits the SCRIPT LOAD
            again.insert(0, _Item(self.combiner.load, loaded, again[0].deadline))
        return again

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed'}")
        # Written commands may have run; queued ones were never sent (their callers may retry
        # freely), so they fail differently.
        unanswered = UnansweredError(str(self.lost))
        for entry in self.waiting:
            for item in [entry] if isinstance(entry, _Item) else entry:
                if not item.future.done():
                    item.future.set_exception(unanswered)
        for item in self.queued:
            if not item.future.done():
                item.future.set_exception(self.lost)
        self.waiting.clear()
        self.deadlines.clear()
        self.queued.clear()
        self.outstanding = 0

    def overdue(self, now: float) -> bool:
        return bool(self.deadlines) and self.deadlines[0] < now


class FastRedis:
    """One pipelined connection; ``call`` sends a pre-encoded command and awaits its reply."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._url = url
        self._tls = tls_context(url)  # rediss://: redis-py's own context for the same URL
        self._timeout = timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._combiner: Combiner | None = None

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
                coro = loop.create_connection(
                    _Protocol, url.hostname or "127.0.0.1", url.port or 6379, ssl=self._tls
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
        proto.send((_Item(payload, future, loop.time() + self._timeout),))
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
        proto.send((_Item(payload, future, loop.time() + self._timeout, group, member),))
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
            _Item(p, f, deadline, *(g or (None, None)))
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
