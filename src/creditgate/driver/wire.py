"""What goes over one pipelined Redis connection: RESP out, replies back, in order.

- ``encode`` and ``command`` build RESP; the hot path encodes a command's static part once and
  caches it.
- ``WireProtocol`` (the asyncio protocol under ``FastRedis``, driver/pipelined.py) writes a
  command at once when nothing is outstanding on the connection, and otherwise queues it until
  every reply already asked for is in, then writes the whole queue at once (adaptive
  pipelining: an idle sidecar adds no delay, a busy one sends one write per Redis round trip
  however many requests arrived meanwhile). It parses the replies with hiredis (the C parser
  redis-py itself uses) and answers the waiting futures in order; Redis answers a
  connection's commands in the order it received them.
- With a ``Combiner`` (the engine), it sends queued charges of one account and request shape as
  one combined command (consume_batch.lua) in place of one script call each. The charges it did
  not run (it stops at the first it cannot answer on the fast path) are sent on their own right
  after it, and the account's later commands wait for its reply, so an account's commands still
  run in the order they were sent.

- With ``wait_for(replicas, timeout_ms)`` (``CREDITGATE_REDIS_WAIT_REPLICAS``), a write that
  calls a script ends with ``WAIT replicas timeout``, and its replies are held until WAIT
  answers: with at least that many replicas, they are given out; with fewer, every call of the
  write fails with ``NotReplicatedError`` (it ran on the master; a retry with the same request
  id replays it). One WAIT covers every command before it on the connection, so it costs one
  replica round trip per write, not per call.

Errors come back as ``hiredis.ReplyError`` objects in their slot. A lost connection fails every
written, unanswered call with ``UnansweredError`` (it may have run) and every queued one with
the reason it was lost (it was never sent).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, Protocol

import hiredis

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence


class UnansweredError(ConnectionError):
    """The command was written to Redis and its reply never came: it may have run."""


class NotReplicatedError(UnansweredError):
    """The command ran on the master, but fewer replicas than required confirmed it in time."""

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"only {confirmed} of {wanted} replica(s) confirmed the write within {timeout_ms} ms "
            "(CREDITGATE_REDIS_WAIT_REPLICAS)"
        )


class _Wait:
    """The slot of a WAIT in ``waiting``: what it answers is held until it comes."""

    __slots__ = ()


_WAIT = _Wait()


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


class Item:
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


class WireProtocol(asyncio.Protocol):
    """One connection's writes and replies: ``send`` queues, combines and writes; replies answer."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        # What each written command answers: one item, or the items a combined command ran.
        self.waiting: collections.deque[Item | list[Item] | _Wait] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.outstanding = 0  # commands written whose replies have not arrived
        self.queued: list[Item] = []  # commands waiting for the outstanding replies
        self.combiner: Combiner | None = None
        self.combined = 0  # commands sent inside combined ones (a counter for tests and bench)
        self.wait: bytes | None = None  # WAIT replicas timeout, after each write calling a script
        self.wait_replicas = 0
        self.wait_timeout_ms = 0
        # The write in flight ends with WAIT (one write is in flight at a time): its replies
        # are held until WAIT answers.
        self.holding = False
        self.held: list[tuple[asyncio.Future[Any], Any]] = []

    def wait_for(self, replicas: int, timeout_ms: int) -> None:
        """End each write that calls a script with WAIT (0 replicas: never)."""
        self.wait_replicas, self.wait_timeout_ms = replicas, timeout_ms
        self.wait = command(3, encode(["WAIT", replicas, timeout_ms])) if replicas > 0 else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, items: Sequence[Item]) -> None:
        """Write now when nothing is outstanding; otherwise queue behind the outstanding ones."""
        if not items:
            return
        if self.outstanding or self.queued:
            self.queued.extend(items)
            return
        self._write(items)

    def _write(self, items: Sequence[Item]) -> None:
        """Write ``items`` at once, runs of one group as a combined command."""
        if len(items) == 1 or self.combiner is None:
            for item in items:
                self.waiting.append(item)
                self.deadlines.append(item.deadline)
            out = [item.payload for item in items]
        else:
            out = self._combine(items)
        wait = self.wait
        self.holding = wait is not None and any(b"\r\nEVAL" in p[:16] for p in out)
        if wait is not None and self.holding:
            out.append(wait)
            self.waiting.append(_WAIT)
            self.deadlines.append(self.deadlines[-1] + self.wait_timeout_ms / 1000)
        self.outstanding = len(out)
        if self.transport is not None and self.lost is None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _combine(self, items: Sequence[Item]) -> list[bytes]:
        """The commands to write for ``items``, runs of one group combined.

        Once a combined command is in the write, the commands after it for the same account (or
        for an account not known here) wait in the queue for its reply: the charges it does not
        run are sent next, in their place, so an account's commands run in the order they were
        sent. Other accounts' commands go in the same write.
        """
        assert self.combiner is not None  # noqa: S101 - checked by the caller
        out: list[bytes] = []
        held: list[Item] = []
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
        again: list[Item] = []
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            entry = waiting.popleft()
            self.deadlines.popleft()
            self.outstanding -= 1
            if isinstance(entry, Item):
                if self.holding:
                    self.held.append((entry.future, reply))
                elif not entry.future.done():
                    entry.future.set_result(reply)
            elif isinstance(entry, _Wait):
                self._release(reply)
            else:
                again += self._answer_combined(entry, reply)
        if again:
            # Not run by their combined command: sent as they are, ahead of what queued since.
            self.queued[:0] = again
        if not self.outstanding and self.queued:
            # Everything asked for is answered: what queued up meanwhile goes in one write.
            batch, self.queued = self.queued, []
            self._write(batch)

    def _answer(self, future: asyncio.Future[Any], reply: Any) -> None:  # noqa: ANN401
        """Give ``reply`` to its caller, or hold it for the write's WAIT."""
        if self.holding:
            self.held.append((future, reply))
        elif not future.done():
            future.set_result(reply)

    def _release(self, reply: Any) -> None:  # noqa: ANN401 - WAIT's reply
        """WAIT answered: give out the replies it held, or fail their calls."""
        held, self.held = self.held, []
        self.holding = False
        if isinstance(reply, int) and reply >= self.wait_replicas:
            for future, answer in held:
                if not future.done():
                    future.set_result(answer)
            return
        confirmed = reply if isinstance(reply, int) else 0
        error = NotReplicatedError(confirmed, self.wait_replicas, self.wait_timeout_ms)
        for future, _ in held:
            if not future.done():
                future.set_exception(error)

    def _answer_combined(self, run: list[Item], reply: Any) -> list[Item]:  # noqa: ANN401
        """Answer the commands a combined command ran; the others, to send as they are."""
        if isinstance(reply, list):
            for item, answer in zip(run, reply, strict=False):
                self._answer(item.future, answer)
            rest = run[len(reply) :]
        else:  # an error reply: the combined script is missing (NOSCRIPT), or it failed
            rest = run
        again = [Item(it.payload, it.future, it.deadline) for it in rest if not it.future.done()]
        if (
            again
            and isinstance(reply, hiredis.ReplyError)
            and str(reply).startswith("NOSCRIPT")
            and self.combiner is not None
        ):
            loaded: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            loaded.add_done_callback(_retrieved)  # nobody awaits the SCRIPT LOAD
            again.insert(0, Item(self.combiner.load, loaded, again[0].deadline))
        return again

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed'}")
        # Written commands may have run; queued ones were never sent (their callers may retry
        # freely), so they fail differently.
        unanswered = UnansweredError(str(self.lost))
        for future, _ in self.held:  # ran, but their WAIT never answered
            if not future.done():
                future.set_exception(unanswered)
        self.held.clear()
        self.holding = False
        for entry in self.waiting:
            if isinstance(entry, _Wait):
                continue
            for item in [entry] if isinstance(entry, Item) else entry:
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
