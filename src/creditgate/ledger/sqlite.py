"""SQLite ledger (aiosqlite): the embedded default. One connection, WAL, one writer at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from creditgate.ledger.schema import VERSION_TABLE, migrations
from creditgate.ledger.sql import Conn, Row, SqlLedger
from creditgate.ledger.store import LedgerError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

_CHUNK = 500  # event rows per INSERT (11 parameters each, far below SQLite's limit)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path`` -> ``rel/path``; ``sqlite:////abs`` -> ``/abs``; ``:memory:``."""
    rest = url.removeprefix("sqlite:").removeprefix("//")
    if not rest.startswith("/"):
        msg = f"ledger URL {url!r}: expected sqlite:///relative/path or sqlite:////absolute/path"
        raise ValueError(msg)
    rest = rest[1:]
    return rest or ":memory:"


class _Conn(Conn):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        await self.db.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self.db.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]


class SqliteLedger(SqlLedger):
    """The ledger in one SQLite file. Several processes may share it (``BEGIN IMMEDIATE``)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._conn = _Conn(db)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> SqliteLedger:
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power loss, not only a process crash.
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=30000")
        return cls(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                msg = f"SQLite ledger unavailable: {exc}"
                raise LedgerError(msg) from exc
            try:
                yield self._conn
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            return await self._conn.fetch(sql, args)

    async def insert_new_events(self, conn: Conn, rows: list[Row]) -> set[str]:
        new: set[str] = set()
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
            sql = (
                f"INSERT INTO events (event_id, ver, account, kind, request_id, time_ms,"  # noqa: S608 - placeholders only
                f" action, quantity, attributes, extra, moves) VALUES {values}"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            )
            new.update(r[0] for r in await conn.fetch(sql, [x for row in chunk for x in row]))
        return new

    async def migrate(self) -> int:
        async with self._lock:
            await self._db.execute(VERSION_TABLE)
            for m in migrations("sqlite"):
                if m.version <= await self._version():
                    continue
                script = (
                    f"BEGIN IMMEDIATE;\n{m.sql}\nINSERT INTO schema_version VALUES"
                    f" ({m.version}, '{m.name}', {int(time.time() * 1000)});\nCOMMIT;"
                )
                try:
                    await self._db.executescript(script)
                except sqlite3.Error:
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    if m.version > await self._version():  # not another process's doing
                        raise
            return await self._version()

    async def _version(self) -> int:
        rows = await self._conn.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    async def close(self) -> None:
        await self._db.close()
