"""Loads each Lua script once (core.lua, lib.lua + rules.lua, the operation) and registers it.

Every script starts with core.lua: what a charge is made of (demand, taking from grant lots, a
move, writing a record, writing an event), used by both ways of charging. consume then goes on
with consume_fast.lua, which answers the common allowed charge with fast.lua's
fast_charge() before the prelude is built and otherwise falls through to lib.lua + consume.lua,
handing over what it read. consume_batch runs fast_charge() for several charges of one account
and needs no prelude.

redis-py's Script objects call EVALSHA and reload the script on NOSCRIPT, so a Redis restart or
failover needs nothing from us.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from creditgate.events.schema import lua_constants

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


# Operations whose common case has a fast path of its own, run before the prelude is built.
_FAST_PATHS = {"consume": ["fast", "consume_fast"]}
# Scripts that are only a fast path: no lib.lua prelude.
_STANDALONE = {"consume_batch": ["fast", "consume_batch"]}
# The first line of every script: what a fast path read before falling through to the general
# path (nil when there is no fast path or it did not run), so lib.lua reads nothing twice. Plain
# locals, not a table, so that the fast path allocates nothing for them.
# The event schema's constants (EV_VERSION) come from the events room, which owns the format.
HEAD = f"local PRE_A, PRE_REC, PRE_T, PRE_NO_DUE_HOLDS\n{lua_constants()}"


def script_source(name: str, *, fast_path: bool = True) -> str:
    """The full text Redis runs for one operation: [its fast path,] lib.lua, the operation.

    ``fast_path=False`` leaves the fast path out (the general path alone answers everything);
    the tests compare the two.
    """
    lua = files("creditgate.engine") / "lua"
    if name in _STANDALONE:
        parts = ["core", *_STANDALONE[name]]
    else:
        parts = ["core", *(_FAST_PATHS.get(name, []) if fast_path else []), "lib", "rules", name]
    return "\n".join([HEAD] + [(lua / f"{part}.lua").read_text(encoding="utf-8") for part in parts])


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
