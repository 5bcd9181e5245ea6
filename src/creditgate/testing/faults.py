"""Faults the tests put a real Redis through."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Spins inside one script for ARGV[1] microseconds: Redis answers nobody else meanwhile. Timed
# with os.clock (the server's CPU time, which the spinning uses) where the server has it: Valkey
# and Redis 7.2+ answer TIME inside a script with the time the script started, so a loop on TIME
# ran until busy-reply-threshold (5 s) there. Redis 6.2 has no `os` (reading it raises, hence
# pcall), and a TIME that moves.
_BUSY = (
    "local ok, clock = pcall(function() return os.clock end) "
    "local function us() if ok and clock then return clock() * 1000000 end "
    "local t = redis.call('TIME') return t[1] * 1000000 + t[2] end "
    "local t0 = us() while us() - t0 < tonumber(ARGV[1]) do end return 1"
)


async def keep_busy(redis: Redis, seconds: float) -> Any:  # noqa: ANN401 - the script's reply
    """Hold ``redis`` in one long script for ``seconds`` (a stuck server, as clients see it)."""
    return await redis.eval(_BUSY, 0, round(seconds * 1_000_000))
