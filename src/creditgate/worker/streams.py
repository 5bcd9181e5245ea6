"""Stream ids and the per-stream housekeeping: trimming and lag."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis

StreamId = tuple[int, int]
_DEAD_CONSUMER_IDLE_MS = 86_400_000


def sid(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def fmt(s: StreamId) -> str:
    return f"{s[0]}-{s[1]}"


def after(s: StreamId) -> StreamId:
    return s[0], s[1] + 1


def _get(info: dict[Any, Any], name: str) -> Any:  # noqa: ANN401 - raw XINFO reply
    value = info.get(name, info.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


async def safe_minid(redis: Redis, stream: str) -> StreamId | None:
    """The smallest id that some consumer group still needs; everything below may go.

    For each group: its oldest pending (delivered, unacknowledged) entry, else the entry after
    the last one it was given. Entries appended meanwhile have larger ids, so the answer stays
    safe however long ago it was computed.
    """
    groups = await redis.xinfo_groups(stream)
    if not groups:
        return None
    floor: StreamId | None = None
    for g in groups:
        # Acknowledged since XINFO (min None): the entry after last-delivered is still safe.
        pending = await _oldest_pending(redis, stream, g)
        need = pending or after(sid(_get(g, "last-delivered-id")))
        floor = need if floor is None else min(floor, need)
    return floor


async def _oldest_pending(redis: Redis, stream: str, group: dict[Any, Any]) -> StreamId | None:
    if int(_get(group, "pending")) == 0:
        return None
    first = (await redis.xpending(stream, _get(group, "name")))["min"]
    return sid(first) if first is not None else None


async def trim(redis: Redis, stream: str) -> None:
    """XTRIM MINID below what every group still needs; never drops an unacknowledged entry."""
    floor = await safe_minid(redis, stream)
    if floor is not None:
        await redis.xtrim(stream, minid=fmt(floor), approximate=False)


async def oldest_unapplied(redis: Redis, stream: str, group: str) -> StreamId | None:
    """The oldest entry ``group`` has not acknowledged (pending or not yet delivered).

    A stream that does not exist (an empty Redis) has none. Without the group (Redis lost it and
    the worker has not recreated it yet) every entry of the stream is still to be applied.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" not in str(exc):
            raise
        return None
    start = "-"
    for g in groups:
        if _get(g, "name") != group:
            continue
        pending = await _oldest_pending(redis, stream, g)
        if pending is not None:
            return pending
        start = fmt(after(sid(_get(g, "last-delivered-id"))))
    nxt = await redis.xrange(stream, min=start, count=1)
    first = nxt[0][0] if nxt else None
    return sid(first) if first is not None else None


async def forget_dead_consumers(redis: Redis, stream: str, group: str) -> None:
    """Drop consumers with nothing pending that have been idle for a day (old worker names)."""
    for c in await redis.xinfo_consumers(stream, group):
        if int(_get(c, "pending")) == 0 and int(_get(c, "idle")) > _DEAD_CONSUMER_IDLE_MS:
            await redis.xgroup_delconsumer(stream, group, _get(c, "name"))
