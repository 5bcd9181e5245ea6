"""Drift check: every account's Redis state against the ledger mirror, and repair from it.

A difference is only meaningful once the worker has applied everything up to the moment of the
check (lag 0): an event still in the stream is in Redis but not yet in the ledger. An account
that is only in the ledger (Redis lost it: restarted empty, wiped) is not a difference: the
first call on it loads it from the ledger (hydration), so it is reported apart. ``repair``
deletes an account's keys and loads them back from the ledger (the ledger wins).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm import tqdm

from creditgate.ledger.hydrate import Hydrator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from redis.asyncio import Redis

    from creditgate.engine.keys import KeySpace
    from creditgate.ledger.store import AccountMirror, LedgerStore

_PARALLEL = 32
_RECORD_MARGIN_MS = 5_000  # records this close to expiry may be gone from Redis already


@dataclass(frozen=True, slots=True)
class Difference:
    account: str
    what: str  # 'field', 'hold', 'hold-expiry' or 'record'
    name: str
    redis: bytes | None
    ledger: bytes | None

    def __str__(self) -> str:
        return (
            f"{self.account}: {self.what} {self.name}: redis={_show(self.redis)}"
            f" ledger={_show(self.ledger)}"
        )


def _show(v: bytes | None, limit: int = 60) -> str:
    if v is None:
        return "(missing)"
    text = v.decode() if v.isascii() else v.hex()
    return text if len(text) <= limit else text[:limit] + "..."


def _compare(
    account: str,
    what: str,
    redis: dict[str, bytes],
    ledger: dict[str, bytes],
) -> list[Difference]:
    return [
        Difference(account, what, k, redis.get(k), ledger.get(k))
        for k in sorted(redis.keys() | ledger.keys())
        if redis.get(k) != ledger.get(k)
    ]


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``Reconciler.inspect`` found, each sorted by account."""

    differences: dict[str, list[Difference]]  # only accounts that have some
    only_in_ledger: list[str]  # not in Redis at all; hydration loads them on first use


def _b(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def _text_keys(raw: Mapping[bytes | str, bytes | str]) -> dict[str, bytes]:
    return {_b(k).decode(): _b(v) for k, v in raw.items()}


class Reconciler:
    def __init__(self, redis: Redis, store: LedgerStore, keys: KeySpace) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.hydrator = Hydrator(redis, store, keys)

    async def accounts(self) -> list[str]:
        """Accounts known to the ledger or present in Redis."""
        found = set(await self.store.accounts())
        async for key in self.redis.scan_iter(match=f"{{{self.keys.prefix}:*}}:a:*", count=1000):
            found.add(key.decode().split("}:a:", 1)[1])
        return sorted(found)

    async def nowhere(self, accounts: Iterable[str]) -> list[str]:
        """Those of ``accounts`` that neither Redis nor the ledger has (a mistyped name)."""
        out = []
        for account in accounts:
            akey, _, hkey, xkey = self.keys.account(account)
            if await self.redis.exists(akey, hkey, xkey) == 0 and (
                await self.store.load_account(account, 0) is None
            ):
                out.append(account)
        return out

    async def diff(self, account: str) -> list[Difference]:
        """Every field, hold and live record where Redis and the ledger disagree."""
        return (await self._diff(account))[0]

    async def _diff(self, account: str) -> tuple[list[Difference], bool]:
        """The differences, and whether the account is only in the ledger.

        Only in the ledger: Redis has no account hash, and every difference is something
        missing from Redis, which loading the account from the ledger restores exactly.
        """
        now = int(time.time() * 1000)
        akey, _, hkey, xkey = self.keys.account(account)
        mirror = await self.store.load_account(account, now + _RECORD_MARGIN_MS)
        fields = _text_keys(await self.redis.hgetall(akey))
        holds = _text_keys(await self.redis.hgetall(hkey))
        scores: list[tuple[bytes, float]] = await self.redis.zrange(  # type: ignore[assignment]
            xkey, 0, -1, withscores=True
        )
        expiry = {m.decode(): b"%d" % int(s) for m, s in scores}
        out = _compare(account, "field", fields, mirror.fields if mirror else {})
        out += _compare(
            account, "hold", holds, {h: v for h, (v, _) in (mirror.holds if mirror else {}).items()}
        )
        out += _compare(
            account,
            "hold-expiry",
            expiry,
            {h: b"%d" % x for h, (_, x) in (mirror.holds if mirror else {}).items()},
        )
        if mirror is not None:
            out += await self._records(account, mirror)
        lost = mirror is not None and not fields and all(d.redis is None for d in out)
        return out, lost

    async def _records(self, account: str, mirror: AccountMirror) -> list[Difference]:
        keys = sorted(mirror.records)
        values = await self.redis.mget(keys) if keys else []
        got = [None if v is None else _b(v) for v in values]
        return [
            Difference(account, "record", k, v, mirror.records[k][0])
            for k, v in zip(keys, got, strict=True)
            if v != mirror.records[k][0]
        ]

    async def check(
        self, accounts: Iterable[str] | None = None, *, progress: bool | None = None
    ) -> dict[str, list[Difference]]:
        """Differences per account (only accounts that have some; not those only in the ledger)."""
        return (await self.inspect(accounts, progress=progress)).differences

    async def inspect(
        self, accounts: Iterable[str] | None = None, *, progress: bool | None = None
    ) -> CheckReport:
        """The accounts (all when None) that differ, and those only in the ledger."""
        names = list(accounts) if accounts is not None else await self.accounts()
        report: dict[str, list[Difference]] = {}
        lost: list[str] = []

        async def one(account: str) -> None:
            found, only_in_ledger = await self._diff(account)
            if only_in_ledger:
                lost.append(account)
            elif found:
                report[account] = found

        await self._each(names, one, "check", progress)
        return CheckReport(dict(sorted(report.items())), sorted(lost))

    async def repair(
        self, accounts: Iterable[str] | None = None, *, progress: bool | None = None
    ) -> int:
        """Rebuild the accounts (all when None) from the ledger; returns how many were loaded.

        Stop traffic to these accounts and let the worker catch up first: an event still in the
        stream when its account is rebuilt is lost from Redis (the ledger keeps it).
        """
        names = list(accounts) if accounts is not None else await self.accounts()
        records = await self._record_keys(set(names))
        loaded = 0

        async def one(account: str) -> None:
            nonlocal loaded
            await self.redis.delete(
                *self.keys.account(account)[::2],
                self.keys.account(account)[3],
                *records.get(account, ()),
            )
            if await self.hydrator.load(account):
                loaded += 1

        await self._each(names, one, "repair", progress)
        return loaded

    async def _record_keys(self, accounts: set[str]) -> dict[str, list[str]]:
        """Every idempotency record in Redis of the given accounts (one SCAN)."""
        out: dict[str, list[str]] = {}
        async for raw in self.redis.scan_iter(match=f"{{{self.keys.prefix}:*}}:r:*", count=1000):
            key = raw.decode()
            account = key.split("}:r:", 1)[1].split("|", 1)[0]
            if account in accounts:
                out.setdefault(account, []).append(key)
        return out

    @staticmethod
    async def _each(
        names: list[str],
        work: Callable[[str], Awaitable[None]],
        label: str,
        progress: bool | None,  # noqa: FBT001 - None: decide by the terminal
    ) -> None:
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(names), desc=label, unit="acct", disable=not show)
        sem = asyncio.Semaphore(_PARALLEL)

        async def guarded(name: str) -> None:
            async with sem:
                await work(name)
            bar.update()

        try:
            await asyncio.gather(*(guarded(n) for n in names))
        finally:
            bar.close()
