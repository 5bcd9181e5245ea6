"""The pipelined hot path on Redis Cluster: one ``FastRedis`` per master, routed by slot.

Every command creditgate sends on the hot path is a script call whose keys share one hash slot
(``engine.keys``), so a command goes whole to the master serving its first key's slot (CRC16,
redis-py's ``key_slot``). The slot map comes from CLUSTER SLOTS and is read again when a node
answers MOVED (the slot moved for good: the command is sent again to the new owner) or when a
node cannot be reached (a failover: the next call finds the promoted replica). ASK (a slot in
migration) sends ASKING and the command together to the named node, once, without touching the
map. MOVED and ASK mean the command did not run, so sending it again charges nothing twice.

A connection failure is raised as it is (``ConnectionError``, or ``UnansweredError`` once the
command was written), exactly as a single ``FastRedis`` does; callers map it (failures.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from creditgate.driver.connect import tls_context
from creditgate.driver.failures import track_cluster_writes
from creditgate.driver.pipelined import FastRedis
from creditgate.driver.wire import command, encode

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    from redis.asyncio import Redis

    from creditgate.driver.wire import Combiner

__all__ = ["ClusterFastRedis", "cluster_client", "first_key"]

SLOTS = 16384
_REDIRECTS = 5
_CLUSTER_SLOTS = command(2, encode(["CLUSTER", "SLOTS"]))
_ASKING = command(1, encode(["ASKING"]))
# Commands whose first key is after the script and the key count (EVAL/EVALSHA/FCALL...).
_SCRIPTED = {b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL", b"FCALL_RO"}


def first_key(payload: bytes) -> bytes | None:
    """The first key of one RESP command, or None when it has none (SCRIPT LOAD, PING...)."""
    args: list[bytes] = []
    pos = payload.index(b"\r\n") + 1
    count = int(payload[1 : pos - 1])
    for _ in range(min(count, 4)):
        end = payload.index(b"\r\n", pos + 1)
        size = int(payload[pos + 2 : end])
        args.append(payload[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2 - 1
    name = args[0].upper()
    if name in _SCRIPTED:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None  # noqa: PLR2004
    if name in (b"SCRIPT", b"PING", b"ASKING", b"CLUSTER", b"INFO", b"TIME"):
        return None
    return args[1] if len(args) > 1 else None


def _redirect(reply: Any) -> tuple[str, str] | None:  # noqa: ANN401 - a Redis reply
    """("MOVED" or "ASK", "host:port") for a redirection error reply, else None."""
    if isinstance(reply, hiredis.ReplyError):
        text = str(reply)
        if text.startswith(("MOVED ", "ASK ")):
            kind, _slot, address = text.split(" ", 2)
            return kind, address
    return None


class ClusterFastRedis:
    """``FastRedis``'s interface over a Redis Cluster: one pipelined connection per master.

    Args:
        url: ``redis://host:port`` (or ``rediss://``) of any node; the others are learnt from it.
        timeout, wait_replicas, wait_timeout_ms: per command and per master, as ``FastRedis``.
    """

    def __init__(
        self, url: str, *, timeout: float = 2.0, wait_replicas: int = 0, wait_timeout_ms: int = 100
    ) -> None:
        parsed = urlparse(url)
        self._scheme = parsed.scheme or "redis"
        self._auth = f"{parsed.netloc.rsplit('@', 1)[0]}@" if "@" in parsed.netloc else ""
        self._query = f"?{parsed.query}" if parsed.query else ""
        self._seeds = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
        self._timeout = timeout
        self._wait = {"wait_replicas": wait_replicas, "wait_timeout_ms": wait_timeout_ms}
        self._nodes: dict[str, FastRedis] = {}
        self._slots: list[str] | None = None
        self._refreshing: asyncio.Lock | None = None
        self._combiner: Combiner | None = None

    # -- topology -----------------------------------------------------------------------------

    def _node(self, address: str) -> FastRedis:
        node = self._nodes.get(address)
        if node is None:
            node = FastRedis(
                f"{self._scheme}://{self._auth}{address}{self._query}",
                timeout=self._timeout,
                **self._wait,
            )
            if self._combiner is not None:
                node.combine_with(self._combiner)
            self._nodes[address] = node
        return node

    async def refresh(self) -> None:
        """Read the slot map (CLUSTER SLOTS) from the first node that answers."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        stale = self._slots
        async with self._refreshing:
            if self._slots is not None and self._slots is not stale:
                return  # another call refreshed it meanwhile
            known = list(dict.fromkeys([*self._seeds, *self._nodes]))
            error: Exception | None = None
            for address in known:
                try:
                    reply = await self._node(address).call(_CLUSTER_SLOTS)
                except (ConnectionError, OSError, TimeoutError) as exc:
                    error = exc
                    continue
                if isinstance(reply, list) and reply:
                    self._slots = self._map(reply)
                    self._seeds = sorted(set(self._slots))
                    return
                error = ConnectionError(f"CLUSTER SLOTS from {address}: {reply!r}")
            msg = f"no Redis Cluster node answered CLUSTER SLOTS: {error}"
            raise ConnectionError(msg)

    @staticmethod
    def _map(reply: list[Any]) -> list[str]:
        slots = [""] * SLOTS
        for first, last, master, *_ in reply:
            address = f"{master[0].decode()}:{master[1]}"
            slots[first : last + 1] = [address] * (last - first + 1)
        return slots

    async def _route(self, payload: bytes) -> FastRedis:
        if self._slots is None:
            await self.refresh()
        assert self._slots is not None  # noqa: S101 - refresh() set it or raised
        key = first_key(payload)
        address = self._slots[key_slot(key)] if key is not None else self._slots[0]
        return self._node(address)

    def route(self, key: str) -> str:
        """The ``host:port`` this client sends ``key``'s commands to ('' before the first)."""
        return self._slots[key_slot(key.encode())] if self._slots is not None else ""

    # -- FastRedis's interface ----------------------------------------------------------------

    def combine_with(self, combiner: Combiner) -> None:
        self._combiner = combiner
        for node in self._nodes.values():
            node.combine_with(combiner)

    @property
    def combined(self) -> int:
        return sum(node.combined for node in self._nodes.values())

    async def call(
        self,
        payload: bytes,
        group: tuple[Hashable, ...] | None = None,
        member: Any = None,  # noqa: ANN401 - the combiner's own
    ) -> Any:  # noqa: ANN401 - a Redis reply
        node = await self._route(payload)
        try:
            reply = await node.call(payload, group, member)
        except (ConnectionError, OSError, TimeoutError):
            self._slots = None  # a failover may be under way: read the map on the next call
            raise
        return await self._follow(payload, reply)

    async def _follow(self, payload: bytes, reply: Any) -> Any:  # noqa: ANN401 - a Redis reply
        """Follow MOVED and ASK (the command did not run) to the node that owns the slot."""
        for _ in range(_REDIRECTS):
            redirect = _redirect(reply)
            if redirect is None:
                return reply
            kind, address = redirect
            try:
                if kind == "MOVED":
                    self._slots = None
                    await self.refresh()
                    reply = await self._node(address).call(payload)
                else:
                    _, reply = await self._node(address).call_many([_ASKING, payload])
            except (ConnectionError, OSError, TimeoutError):
                self._slots = None
                raise
        return reply

    async def call_many(
        self,
        payloads: Sequence[bytes],
        groups: Sequence[tuple[tuple[Hashable, ...] | None, Any] | None] = (),
    ) -> list[Any]:
        """Each master's commands in one write to it, all masters at once; replies in order."""
        by_node: dict[FastRedis, list[int]] = {}
        for i, payload in enumerate(payloads):
            by_node.setdefault(await self._route(payload), []).append(i)
        out: list[Any] = [None] * len(payloads)

        async def one(node: FastRedis, indices: list[int]) -> None:
            replies = await node.call_many(
                [payloads[i] for i in indices], [groups[i] for i in indices] if groups else ()
            )
            for i, reply in zip(indices, replies, strict=True):
                out[i] = await self._follow(payloads[i], reply)

        try:
            await asyncio.gather(*(one(n, ix) for n, ix in by_node.items()))
        except (ConnectionError, OSError, TimeoutError):
            self._slots = None
            raise
        return out

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            with contextlib.suppress(Exception):
                await node.aclose()


def cluster_client(url: str, *, timeout: float, max_connections: int | None = None) -> Redis:
    """A redis-py Redis Cluster client seeded from ``url`` (any node; the rest are learnt).

    Typed as ``Redis``: creditgate calls only commands both clients have, each on keys of one
    slot. Its connections flag each call before writing, as a single node's pool does
    (``failures.track_cluster_writes``), so a failed call is told apart the same way.
    """
    tls_context(url)
    client = RedisCluster.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections or 2**31,
    )
    track_cluster_writes(client)
    return cast("Redis", client)
