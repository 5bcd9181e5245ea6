"""How far the ledger trails Redis, for one account: ``Lag`` from the ledger and the stream.

The ledger knows the newest event it applied (``applied_until``). Redis knows the newest entry of
the account's shard stream; when the ledger holds that entry, everything of the shard before it
is applied too (one worker or lane reads a stream in order and applies each batch in one
transaction), so the view is current: ``caught_up``, lag 0. Otherwise, or when Redis cannot be
asked, ``lag_ms`` is the wall clock minus the newest applied event's time: an upper bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from creditgate.credits.view import Lag

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from creditgate.engine.keys import KeySpace
    from creditgate.ledger.store import LedgerStore

__all__ = ["measure", "stream_tip"]


def stream_tip(
    redis: Redis | RedisCluster, keys: KeySpace
) -> Callable[[str], Awaitable[str | None]]:
    """The newest entry of the account's shard stream, as a ledger event id.

    '' : the stream is empty; None: Redis did not answer.
    """

    async def tip(account: str) -> str | None:
        stream = keys.stream(keys.shard_of(account))
        try:
            newest = await redis.xrevrange(stream, count=1)
        except (RedisError, OSError):
            return None  # the view still answers, with the upper bound
        if not newest:
            return ""
        entry = newest[0][0]
        return f"{stream}/{entry.decode() if isinstance(entry, bytes) else entry}"

    return tip


async def measure(
    ledger: LedgerStore,
    account: str,
    now_ms: int,
    tip: Callable[[str], Awaitable[str | None]] | None,
) -> Lag:
    newest, own = await ledger.applied_until(account)
    head = await tip(account) if tip is not None else None
    caught_up = head == "" or (bool(head) and await ledger.has_event(str(head)))
    lag = 0 if caught_up or not newest else max(0, now_ms - newest)
    return Lag(newest, lag, own, caught_up)
