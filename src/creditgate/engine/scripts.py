"""Loads each Lua script once and registers it.

Every script is core.lua (the integer arithmetic, a move, a debit, a record, a hold, an event)
and charge.lua (the one charge: walk the pools, take from them, write a CheckAndConsume or
Reserve), then the operation. consume starts with its first branch (consume.lua), which answers
the common case with charge() before the prelude is built, then lib.lua + rules.lua +
recurring.lua (the account state, lazy maintenance, returns, recurring charges) and
consume_general.lua, which runs the same charge() once everything due is up to date.
consume_batch runs charge() for several charges of one account and needs no prelude; the other
operations are core, charge, lib, rules, recurring and their own file.

redis-py's Script objects call EVALSHA and reload the script on NOSCRIPT, so a Redis restart or
failover needs nothing from us.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from creditgate.events.schema import lua_constants

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable
    from pathlib import Path

    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


# Operations whose common case is answered by a first branch of their own, run before the
# prelude is built; the rest of the operation follows the prelude under another name.
_FIRST_BRANCH = {"consume": ("consume", "consume_general")}
# Scripts that need no prelude.
_STANDALONE = frozenset({"consume_batch"})
# The first line of every script: what a first branch read before falling through to the general
# path (nil when there is none or it did not run), so lib.lua reads nothing twice. Plain locals,
# not a table, so that the first branch allocates nothing for them.
# The event schema's constants (EV_VERSION) come from the events room, which owns the format.
HEAD = f"local PRE_A, PRE_REC, PRE_T, PRE_NO_DUE_HOLDS, PRE_REM, PRE_CAPPED\n{lua_constants()}"


def script_source(name: str, *, fast_path: bool = True, lua_dir: Path | None = None) -> str:
    """The full text Redis runs for one operation.

    ``fast_path=False`` leaves consume's first branch out (the general path alone answers
    everything); the tests compare the two. ``lua_dir`` reads the files from another directory
    (a changed copy, to measure with bench/script_cost.py).
    """
    lua: Traversable = lua_dir or files("creditgate.engine") / "lua"
    parts = ["core", "charge"]
    if name in _STANDALONE:
        parts.append(name)
    elif name in _FIRST_BRANCH:
        first, rest = _FIRST_BRANCH[name]
        parts += [first] if fast_path else []
        parts += ["lib", "rules", "recurring", rest]
    else:
        parts += ["lib", "rules", "recurring", name]
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
