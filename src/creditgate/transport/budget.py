"""What all calls in flight together may hold: one budget of calls and request bytes per server.

Each message is capped (transport/limits.py), but that bounds one call, not many. On the code
before this budget, on 8 connections: 128 valid 1 MiB batches at once took a sidecar to 857-890
MiB RSS, 256 refused 100,000-item batches just under 1 MiB to 336-444 MiB, 1,000 CheckAndConsume
calls of 1 MB to 596-805 MiB. Most of that was gRPC buffering requests that Python had not
reached yet, so the budget acts before a request's bytes are read, not after:

- the quota and admin methods are served as client-streaming handlers (a unary client cannot
  tell), so gRPC reads no message until the handler asks for it; BDP probing is off and the
  HTTP/2 lookahead is 16 KiB (``limits.server_options``), so an unread call buffers little;
- a call over ``max_calls`` is refused before anything is read;
- a request's size is known only once it is read, and gRPC may receive up to
  ``limits.MAX_RECEIVE_BYTES``, so a read takes that much room until the bytes are in, then
  holds their real size until the call is answered. A read waits while other reads take the
  room; a call is refused when the requests held leave no room for one read.

A refused call is answered RESOURCE_EXHAUSTED at once, with the limit and its setting in the
message. It ran nothing and changed nothing, so a retry after a backoff is always safe.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import os
from typing import TYPE_CHECKING

from creditgate.transport import limits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

MIB = 1024 * 1024
# Defaults that keep the shipped sidecar under its limit (256 Mi in
# deploy/kubernetes/sidecar.yaml); docs/OPERATIONS.md "Limits" gives the figures measured. A
# valid 1 MiB batch costs about 12 MiB of RSS while it is served, hence the 6 MiB.
MAX_CALLS = 1000
MAX_BYTES = 6 * MIB
CALLS_SETTING = "CREDITGATE_MAX_CALLS_IN_FLIGHT"
BYTES_SETTING = "CREDITGATE_MAX_BYTES_IN_FLIGHT"
_AFTER = "nothing was done: retry after a backoff"
_M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process, unless ``MALLOC_ARENA_MAX`` is set.

    glibc gives threads up to 8 arenas per core, and gRPC's threads allocate requests in
    them; memory freed in one arena is not reused by another, so under sustained abuse the
    process keeps growing although the budget bounds what is live. Fifteen rounds of the
    floods of tests/transport/test_memory_abuse.py all at once, on 8 connections, with an 8 MiB
    budget peaked at 275 MiB with glibc's default and at 221 MiB with 2 arenas. Call it before the
    server starts its threads. Returns whether the cap was set (not without ``mallopt``).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


class Budget:
    """Calls and request bytes in flight on one server (one process, one event loop: no lock).

    ``read_size`` is the room a read takes until its bytes are in: the most gRPC will receive.
    """

    def __init__(
        self,
        max_calls: int = MAX_CALLS,
        max_bytes: int = MAX_BYTES,
        read_size: int = limits.MAX_RECEIVE_BYTES,
    ) -> None:
        if max_bytes < read_size:
            msg = f"max_bytes ({max_bytes:,}) must leave room for one read ({read_size:,})"
            raise ValueError(msg)
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.read_size = read_size
        self.calls = 0  # calls admitted and not yet answered
        self.held = 0  # bytes of the requests those calls have read
        self.reading = 0  # reads in progress, each taking read_size
        # Reads waiting for room; each gets None (room was taken for it) or its refusal.
        self._waiters: collections.deque[asyncio.Future[str | None]] = collections.deque()

    def enter(self) -> str | None:
        """Admit one call, or say (the whole status message) why not."""
        if self.calls >= self.max_calls:
            return (
                f"the sidecar is serving its limit of {self.max_calls:,} calls at once "
                f"({CALLS_SETTING}); {_AFTER}"
            )
        self.calls += 1
        return None

    def leave(self, size: int) -> None:
        """The call admitted by ``enter`` is answered; ``size``: the bytes ``read`` returned."""
        self.calls -= 1
        self.held -= size
        self._dispatch()

    def _full(self) -> bool:
        return self.held + self.read_size > self.max_bytes

    def _room(self) -> bool:
        return self.held + (self.reading + 1) * self.read_size <= self.max_bytes

    def _refusal(self) -> str:
        return (
            f"the sidecar holds {self.held:,} bytes of requests in flight, and its limit of "
            f"{self.max_bytes:,} ({BYTES_SETTING}) leaves no room to read one more of up to "
            f"{self.read_size:,}; {_AFTER}, or send smaller batches"
        )

    def _dispatch(self) -> None:
        """Give freed room to waiting reads, first come first served; refuse them all if full."""
        while self._waiters:
            if self._full():
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(self._refusal())
            elif self._room():
                waiter = self._waiters.popleft()
                if not waiter.done():
                    self.reading += 1  # taken on the waiter's behalf
                    waiter.set_result(None)
            else:
                return

    async def read(self, receive: Callable[[], Awaitable[object]]) -> object:
        """``receive()``'s result once there is room to read it; a ``str`` refusal if full.

        A request it returns holds ``len`` of its bytes until ``leave``.
        """
        if self._full():
            return self._refusal()
        if self._waiters or not self._room():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                refusal = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is None:
                    self.reading -= 1  # room was given, and the call went away
                    self._dispatch()
                raise
            if refusal is not None:
                return refusal
        else:
            self.reading += 1
        data: object = None
        try:
            data = await receive()
        finally:
            self.reading -= 1
            if isinstance(data, bytes):
                self.held += len(data)
            self._dispatch()
        return data
