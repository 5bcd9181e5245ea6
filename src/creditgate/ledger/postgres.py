"""PostgreSQL ledger (asyncpg): the production backend.

Every connection or server failure surfaces as ``LedgerError``; the worker then keeps its events
unacknowledged and retries, so an outage delays the ledger but loses nothing.
"""

from __future__ import annotations

import re
import time
from contextlib import asynccontextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import asyncpg

from creditgate.ledger.schema import VERSION_TABLE, migrations
from creditgate.ledger.sql import MOVEMENT_COLUMNS, Conn, Row, SqlLedger
from creditgate.ledger.store import LedgerError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from asyncpg.pool import PoolConnectionProxy

# A client-side protocol error (seen after a server restart: "cannot switch to state 15; another
# operation is in progress") leaves the connection unusable; it is dropped, not pooled again.
_BROKEN = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
_FAILURES = (OSError, asyncpg.PostgresError, TimeoutError, *_BROKEN)
_MIGRATE_LOCK = 0x63726564  # advisory lock id: one migrator at a time
_INSERT_EVENTS = (
    "INSERT INTO events (event_id, ver, account, kind, request_id, time_ms, action, quantity,"
    " attributes, extra, moves) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[],"
    " $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::text[],"
    " $11::text[]) ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


@cache
def dollar(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``$1, $2...`` (the shared SQL has no ``?`` in literals)."""
    n = 0

    def number(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"\?", number, sql)


def _failure(exc: BaseException) -> LedgerError:
    return LedgerError(f"PostgreSQL ledger unavailable: {type(exc).__name__}: {exc}")


class _Conn(Conn):
    def __init__(self, conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> None:
        self.conn = conn

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        await self.conn.executemany(dollar(sql), rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self.conn.fetch(dollar(sql), *args)]


class PostgresLedger(SqlLedger):
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, max_size: int = 4) -> PostgresLedger:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=0, max_size=max_size, command_timeout=30, timeout=10
            )
        except _FAILURES as exc:
            raise _failure(exc) from exc
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        yield _Conn(conn)
                except _BROKEN:
                    conn.terminate()
                    raise
        except _FAILURES as exc:
            raise _failure(exc) from exc

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return [tuple(r) for r in await self._pool.fetch(dollar(sql), *args)]
        except _FAILURES as exc:
            raise _failure(exc) from exc

    async def insert_new_events(self, conn: Conn, rows: list[Row]) -> set[str]:
        assert isinstance(conn, _Conn)  # noqa: S101 - our own transaction() made it
        columns = [list(c) for c in zip(*rows, strict=True)]
        return {r[0] for r in await conn.conn.fetch(_INSERT_EVENTS, *columns)}

    async def insert_movements(self, conn: Conn, rows: Sequence[Row]) -> None:
        assert isinstance(conn, _Conn)  # noqa: S101 - our own transaction() made it
        # COPY: one stream of rows instead of a statement per row. A duplicate (impossible, see
        # SqlLedger.insert_movements) would fail the whole transaction, never skip silently.
        await conn.conn.copy_records_to_table("movements", records=rows, columns=MOVEMENT_COLUMNS)

    async def migrate(self) -> int:
        async with self.transaction() as c:
            assert isinstance(c, _Conn)  # noqa: S101 - our own transaction() made it
            conn = c.conn
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute(VERSION_TABLE)
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            for m in migrations("postgres"):
                if m.version > current:
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_version VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        int(time.time() * 1000),
                    )
                    current = m.version
            return int(current)

    async def close(self) -> None:
        await self._pool.close()
