"""Hydration: an account missing from Redis is loaded from the ledger mirror, once.

``hydrate.lua`` writes only when the account hash does not exist, so two sidecars loading the
same account cannot both write, and a load can never overwrite what a script changed since.
Within one process a single-flight guard keeps concurrent requests to one load per account.
Redis must not evict creditgate keys (``maxmemory-policy noeviction``): an account hash that
vanished while its newer events were still in the stream would be loaded stale.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain.errors import UnavailableError
from creditgate.engine.calls.common import no_plan
from creditgate.engine.scripts import script_source
from creditgate.ledger.store import LedgerError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace
    from creditgate.ledger.store import AccountMirror, LedgerStore

HYDRATIONS = Counter(
    "creditgate_hydrations", "Accounts loaded from the ledger into Redis", ["result"]
)


class Hydrator:
    """Loads accounts from ``store`` into ``redis``; one in-flight load per account."""

    def __init__(self, redis: Redis, store: LedgerStore, keys: KeySpace) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self._script = redis.register_script(script_source("hydrate"))
        self._inflight: dict[str, asyncio.Task[bool]] = {}

    async def load(self, account: str) -> bool:
        """Load ``account`` unless Redis has it; True when Redis has it afterwards.

        False means the ledger does not know the account either.
        """
        task = self._inflight.get(account)
        if task is None:
            task = asyncio.create_task(self._load(account))
            self._inflight[account] = task
            task.add_done_callback(lambda _: self._inflight.pop(account, None))
        # shield: one caller giving up (a cancelled RPC) must not cancel the others' load.
        return await asyncio.shield(task)

    async def _load(self, account: str) -> bool:
        try:
            mirror = await self.store.load_account(account, int(time.time() * 1000))
        except LedgerError as exc:
            msg = f"account {account!r} is not in Redis and the ledger is unreachable ({exc})"
            raise UnavailableError(msg) from exc
        if mirror is None:
            HYDRATIONS.labels("unknown").inc()
            return False
        keys, args = self._arguments(mirror)
        try:
            wrote = await self._script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            msg = f"Redis is unreachable ({exc}); retry later"
            raise UnavailableError(msg) from exc
        HYDRATIONS.labels("loaded" if wrote == 1 else "present").inc()
        return True

    def _arguments(self, mirror: AccountMirror) -> tuple[list[str], list[str | int | bytes]]:
        account = mirror.account
        args: list[str | int | bytes] = [*no_plan(account), len(mirror.fields)]
        for name, value in sorted(mirror.fields.items()):
            args += [name, value]
        args.append(len(mirror.holds))
        for hid, (packed, exp) in sorted(mirror.holds.items()):
            args += [hid, packed, exp]
        record_keys = sorted(mirror.records)
        for key in record_keys:
            value, expires = mirror.records[key]
            args += [value, expires or 0]
        return [*self.keys.account(account), *record_keys], args


def install_hydration(engine: Engine, store: LedgerStore) -> Hydrator:
    """Make ``engine`` load accounts it cannot find in Redis from ``store``."""
    hydrator = Hydrator(engine.redis, store, engine.keys)
    engine.on_missing = hydrator.load
    return hydrator
