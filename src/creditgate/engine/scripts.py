"""Loads each Lua script once (the library, then the operation) and registers it with Redis.

Every script is lib.lua (the prelude: account, pools, events, upkeep), general.lua (the
general path's functions, built only when a call needs them), charge.lua (the charge, written
once), then the operation's own file. consume and consume_batch both charge through charge();
its common case, an allowed charge with nothing due, never builds the general path.

redis-py's Script objects call EVALSHA and reload the script on NOSCRIPT, so a Redis restart or
failover needs nothing from us.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


LIBRARY = ["lib", "general", "charge"]


def head(*, fast_path: bool = True) -> str:
    """The first line of every script.

    ``FAST`` false makes every call build the general path and maintain every pool, even when
    nothing is due; the tests compare the two.
    """
    return f"local FAST = {'true' if fast_path else 'false'}"


HEAD = head()


def script_source(name: str, *, fast_path: bool = True) -> str:
    """The full text Redis runs for one operation: the library, then the operation."""
    lua = files("creditgate.engine") / "lua"
    parts = [(lua / f"{part}.lua").read_text(encoding="utf-8") for part in [*LIBRARY, name]]
    return "\n".join([head(fast_path=fast_path), *parts])


class Scripts:
    """One registered script per operation."""

    def __init__(self, redis: Redis, *, fast_path: bool = True) -> None:
        self.consume = redis.register_script(script_source("consume", fast_path=fast_path))
        self.consume_batch = self._register(redis, "consume_batch")
        self.settle = self._register(redis, "settle")
        self.release = self._register(redis, "release")
        self.refund = self._register(redis, "refund")
        self.grant = self._register(redis, "grant")
        self.balance = self._register(redis, "balance")
        self.account = self._register(redis, "account")

    @staticmethod
    def _register(redis: Redis, name: str) -> AsyncScript:
        return redis.register_script(script_source(name))
