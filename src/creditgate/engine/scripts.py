"""Loads each Lua script once (lib.lua prelude + the operation) and registers it with Redis.

redis-py's Script objects call EVALSHA and reload the script on NOSCRIPT, so a Redis restart or
failover needs nothing from us.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


def script_source(name: str) -> str:
    """The full text Redis runs for one operation."""
    lua = files("creditgate.engine") / "lua"
    return (
        (lua / "lib.lua").read_text(encoding="utf-8")
        + "\n"
        + (lua / f"{name}.lua").read_text(encoding="utf-8")
    )


class Scripts:
    """One registered script per operation."""

    def __init__(self, redis: Redis) -> None:
        self.consume = self._register(redis, "consume")
        self.settle = self._register(redis, "settle")
        self.release = self._register(redis, "release")
        self.refund = self._register(redis, "refund")
        self.grant = self._register(redis, "grant")
        self.balance = self._register(redis, "balance")
        self.account = self._register(redis, "account")

    @staticmethod
    def _register(redis: Redis, name: str) -> AsyncScript:
        return redis.register_script(script_source(name))
