"""The SQL both backends share: the batch write and the reads, written once with ``?``.

A backend supplies a transaction, plain queries and the one statement whose form differs
(insert the events and return the ids that were new).
"""

from __future__ import annotations

import datetime as dt
from abc import abstractmethod
from dataclasses import astuple
from typing import TYPE_CHECKING, Any, Protocol, cast

from creditgate.domain.purchase import PurchaseRecord, PurchaseStatus
from creditgate.events.schema import ADD_KINDS, USAGE_KINDS, entry_ms
from creditgate.ledger.rows import BatchRows, collect, event_row
from creditgate.ledger.store import (
    AccountMirror,
    ApplyResult,
    AuditEntry,
    LedgerStore,
    Page,
    Period,
    PoolTotals,
    Transaction,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager

    from creditgate.events.schema import Event

Row = tuple[Any, ...]
DAY_MS = 86_400_000

UPSERT = {
    "movements": "INSERT INTO movements (event_id, seq, ver, account, pool, delta, balance_after,"
    " lot, kind, request_id, origin, time_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (event_id, seq) DO NOTHING",
    "requests": "INSERT INTO requests (account, request_id, action, quantity, attributes)"
    " VALUES (?,?,?,?,?) ON CONFLICT (account, request_id) DO NOTHING",
    "accounts": "INSERT INTO accounts (account, stream, first_ver, last_ver) VALUES (?,?,?,?)"
    " ON CONFLICT (account) DO UPDATE SET"
    " first_ver = CASE WHEN excluded.first_ver < accounts.first_ver"
    " THEN excluded.first_ver ELSE accounts.first_ver END,"
    " last_ver = CASE WHEN excluded.last_ver > accounts.last_ver"
    " THEN excluded.last_ver ELSE accounts.last_ver END",
    "balances": "INSERT INTO pool_balances (account, pool, balance, ver) VALUES (?,?,?,?)"
    " ON CONFLICT (account, pool) DO UPDATE SET balance = excluded.balance, ver = excluded.ver"
    " WHERE excluded.ver > pool_balances.ver",
    "fields": "INSERT INTO account_fields (account, field, value, ver) VALUES (?,?,?,?)"
    " ON CONFLICT (account, field) DO UPDATE SET value = excluded.value, ver = excluded.ver"
    " WHERE excluded.ver > account_fields.ver",
    "holds": "INSERT INTO holds (account, hold_id, value, expires_at, ver) VALUES (?,?,?,?,?)"
    " ON CONFLICT (account, hold_id) DO UPDATE SET value = excluded.value,"
    " expires_at = excluded.expires_at, ver = excluded.ver WHERE excluded.ver > holds.ver",
    # A record written with KEEPTTL (expires_at NULL) keeps the expiry it had.
    "records": "INSERT INTO records (key, account, value, expires_at, ver) VALUES (?,?,?,?,?)"
    " ON CONFLICT (key) DO UPDATE SET"
    " value = CASE WHEN excluded.ver > records.ver THEN excluded.value ELSE records.value END,"
    " expires_at = CASE WHEN excluded.ver > records.ver"
    " THEN COALESCE(excluded.expires_at, records.expires_at)"
    " ELSE COALESCE(records.expires_at, excluded.expires_at) END,"
    " ver = CASE WHEN excluded.ver > records.ver THEN excluded.ver ELSE records.ver END",
}

MOVEMENT_COLUMNS = (
    "event_id",
    "seq",
    "ver",
    "account",
    "pool",
    "delta",
    "balance_after",
    "lot",
    "kind",
    "request_id",
    "origin",
    "time_ms",
)
_HISTORY = (
    "SELECT m.ver, m.seq, m.event_id, m.kind, m.pool, m.delta, m.balance_after, m.lot,"
    " m.request_id, r.action, m.time_ms FROM movements m"
    " LEFT JOIN requests r ON r.account = m.account AND r.request_id = m.origin"
    " WHERE m.account = ? AND (m.ver < ? OR (m.ver = ? AND m.seq < ?)) AND m.delta <> 0"
    " AND (? = '' OR m.pool = ?) ORDER BY m.ver DESC, m.seq DESC LIMIT ?"
)
_USAGE = (
    "SELECT r.action, m.pool, m.time_ms / 86400000 AS day, CAST(SUM(-m.delta) AS BIGINT)"
    " FROM movements m JOIN requests r ON r.account = m.account AND r.request_id = m.origin"
    " WHERE m.account = ? AND m.time_ms >= ? AND m.time_ms < ? AND m.kind IN ({kinds})"
    " GROUP BY r.action, m.pool, m.time_ms / 86400000"
)
_TOTALS = (
    "SELECT pool, kind, CAST(SUM(CASE WHEN delta > 0 THEN delta ELSE 0 END) AS BIGINT),"
    " CAST(SUM(CASE WHEN delta < 0 THEN -delta ELSE 0 END) AS BIGINT)"
    " FROM movements WHERE account = ? GROUP BY pool, kind"
)
_MAX_VER = 2**63 - 1
_AUDIT_COLUMNS = "time_ms, principal, role, rpc, account, request, state_before, state_after"
_AUDIT_INSERT = f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"  # noqa: S608 - constant columns


_PURCHASE_COLUMNS = "id, account, amount, unit, status, provider, provider_ref, failure, created"
PURCHASE_SELECT = f"SELECT {_PURCHASE_COLUMNS} FROM purchases"  # noqa: S608 - constant columns


def purchase_row(r: Row) -> PurchaseRecord:
    status = cast("PurchaseStatus", r[4])
    return PurchaseRecord(r[0], r[1], int(r[2]), r[3], status, r[5], r[6], r[7], int(r[8]))


def _audit_row(e: AuditEntry) -> Row:
    return (e.time_ms, e.principal, e.role, e.rpc, e.account, e.request, e.before, e.after)


class Conn(Protocol):
    """One connection inside a transaction."""

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None: ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...


class SqlLedger(LedgerStore):
    """Everything but connection handling and dialect details."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A connection inside one transaction, committed on a clean exit."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Run one read query outside a transaction."""

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    @abstractmethod
    async def insert_new_events(self, conn: Conn, rows: list[Row]) -> set[str]:
        """Insert event rows, skipping ids already present; return the ids that were new."""

    # --- writes --------------------------------------------------------------------------

    async def apply(self, events: Sequence[Event]) -> ApplyResult:
        unique = list({e.event_id: e for e in events}.values())
        if not unique:
            return ApplyResult(0, 0)
        async with self.transaction() as conn:
            new_ids = await self.insert_new_events(conn, [event_row(e) for e in unique])
            fresh = [e for e in unique if e.event_id in new_ids]
            await self._write(conn, collect(fresh))
        return ApplyResult(len(fresh), len(events) - len(fresh))

    async def insert_movements(self, conn: Conn, rows: Sequence[Row]) -> None:
        """Movement rows (``MOVEMENT_COLUMNS``) of events whose rows were new in this transaction.

        None of them can be in the table already: a concurrent writer of the same event waits
        on its event row and then finds it present. PostgreSQL COPYs them.
        """
        await conn.executemany(UPSERT["movements"], rows)

    async def _write(self, conn: Conn, rows: BatchRows) -> None:
        if rows.movements:
            await self.insert_movements(conn, rows.movements)
        # Sorted keys give concurrent writers one lock order, which avoids deadlocks.
        tables: list[tuple[str, Sequence[Row]]] = [
            ("requests", rows.requests),
            ("accounts", [rows.accounts[k] for k in sorted(rows.accounts)]),
            ("balances", [rows.balances[k] for k in sorted(rows.balances)]),
            ("fields", [rows.fields[k] for k in sorted(rows.fields)]),
            ("holds", [rows.holds[k] for k in sorted(rows.holds)]),
            ("records", [rows.records[k] for k in sorted(rows.records)]),
        ]
        for table, data in tables:
            if data:
                await conn.executemany(UPSERT[table], data)

    async def prune_records(self, before_ms: int) -> int:
        async with self.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM records WHERE expires_at < ? RETURNING key", (before_ms,)
            )
        return len(rows)

    async def write_audit(self, entry: AuditEntry) -> None:
        async with self.transaction() as conn:
            await conn.executemany(_AUDIT_INSERT, [_audit_row(entry)])

    async def claim_purchase(self, record: PurchaseRecord) -> PurchaseRecord:
        r = record
        async with self.transaction() as conn:
            await conn.executemany(
                f"INSERT INTO purchases ({_PURCHASE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"  # noqa: S608 - constant columns
                " ON CONFLICT (id) DO NOTHING",
                [astuple(r)],  # the fields in the columns' order
            )
            rows = await conn.fetch(f"{PURCHASE_SELECT} WHERE id = ?", (r.purchase_id,))
        return purchase_row(rows[0])

    async def finish_purchase(self, record: PurchaseRecord) -> None:
        r = record
        async with self.transaction() as conn:
            await conn.executemany(
                "UPDATE purchases SET status = ?, provider = ?, provider_ref = ?, failure = ?"
                " WHERE id = ? AND status = 'pending'",
                [(r.status, r.provider, r.provider_ref, r.failure, r.purchase_id)],
            )

    # --- reads ---------------------------------------------------------------------------

    async def purchased_since(self, account: str, prefix: str, since_ms: int) -> int:
        """What succeeded purchases whose id starts with ``prefix`` took since ``since_ms``."""
        rows = await self.fetch(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM purchases WHERE account = ?"
            " AND status = 'succeeded' AND created >= ? AND substr(id, 1, ?) = ?",
            (account, since_ms, len(prefix), prefix),
        )
        return int(rows[0][0])

    async def purchases(self, account: str, limit: int = 100) -> list[PurchaseRecord]:
        rows = await self.fetch(
            f"{PURCHASE_SELECT} WHERE account = ? ORDER BY created DESC, id DESC LIMIT ?",
            (account, limit),
        )
        return [purchase_row(r) for r in rows]

    async def audit_entries(self, account: str, limit: int = 100) -> list[AuditEntry]:
        rows = await self.fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE account = ? ORDER BY id DESC LIMIT ?",  # noqa: S608 - constant column list
            (account, limit),
        )
        return [AuditEntry(int(r[0]), *r[1:]) for r in rows]

    async def load_account(self, account: str, now_ms: int) -> AccountMirror | None:
        fields = await self.account_fields(account)
        if not fields:
            return None
        holds = await self.fetch(
            "SELECT hold_id, value, expires_at FROM holds WHERE account = ? AND value IS NOT NULL",
            (account,),
        )
        records = await self.fetch(
            "SELECT key, value, expires_at FROM records WHERE account = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (account, now_ms),
        )
        return AccountMirror(
            account,
            fields,
            {h: (bytes(v), int(x or 0)) for h, v, x in holds},
            {k: (bytes(v), None if x is None else int(x)) for k, v, x in records},
        )

    async def accounts(self) -> list[str]:
        return [r[0] for r in await self.fetch("SELECT account FROM accounts ORDER BY account")]

    async def pool_balances(self, account: str) -> dict[str, int]:
        rows = await self.fetch(
            "SELECT pool, balance FROM pool_balances WHERE account = ?", (account,)
        )
        return {p: int(b) for p, b in rows}

    async def movement_sums(self, account: str) -> dict[str, int]:
        rows = await self.fetch(
            "SELECT pool, CAST(SUM(delta) AS BIGINT) FROM movements"
            " WHERE account = ? GROUP BY pool",
            (account,),
        )
        return {p: int(s) for p, s in rows}

    async def transactions(
        self,
        account: str,
        limit: int = 50,
        cursor: str | None = None,
        pool: str | None = None,
    ) -> Page:
        ver, seq = (_MAX_VER, 0) if cursor is None else map(int, cursor.split("."))
        p = pool or ""
        rows = await self.fetch(_HISTORY, (account, ver, ver, seq, p, p, limit + 1))
        items = tuple(
            Transaction(
                f"{r[0]}.{r[1]}",
                r[2],
                r[3],
                r[4],
                int(r[5]),
                int(r[6]),
                r[7],
                r[8],
                r[9],
                int(r[10]),
            )
            for r in rows[:limit]
        )
        return Page(items, items[-1].cursor if len(rows) > limit else None)

    async def account_fields(self, account: str) -> dict[str, bytes]:
        rows = await self.fetch(
            "SELECT field, value FROM account_fields WHERE account = ? AND value IS NOT NULL",
            (account,),
        )
        return {f: bytes(v) for f, v in rows}

    async def has_event(self, event_id: str) -> bool:
        return bool(await self.fetch("SELECT 1 FROM events WHERE event_id = ?", (event_id,)))

    async def applied_until(self, account: str) -> tuple[int, int]:
        # One pass over the accounts (a row each), not over the events.
        (newest, own), *_ = await self.fetch(
            "SELECT MAX(last_ver), MAX(CASE WHEN account = ? THEN last_ver END) FROM accounts",
            (account,),
        )
        return entry_ms(int(newest or 0)), entry_ms(int(own or 0))

    async def totals(self, account: str) -> list[PoolTotals]:
        acc: dict[str, list[int]] = {}
        for pool, kind, plus, minus in await self.fetch(_TOTALS, (account,)):
            t = acc.setdefault(pool, [0, 0, 0])
            if kind in ADD_KINDS:
                t[0] += int(plus)
            elif kind in USAGE_KINDS:
                t[1] += int(minus) - int(plus)
            elif kind == "expire":
                t[2] += int(minus) - int(plus)
        return [PoolTotals(p, *v) for p, v in sorted(acc.items())]

    async def usage(
        self, account: str, period: Period = "day", since_ms: int = 0, until_ms: int | None = None
    ) -> list[Usage]:
        sql = _USAGE.format(kinds=",".join("?" * len(USAGE_KINDS)))
        until = _MAX_VER if until_ms is None else until_ms
        rows = await self.fetch(sql, (account, since_ms, until, *USAGE_KINDS))
        acc: dict[tuple[str, str, str], int] = {}
        for action, pool, day, amount in rows:
            date = dt.datetime.fromtimestamp(int(day) * DAY_MS / 1000, tz=dt.UTC).date()
            label = date.isoformat() if period == "day" else date.strftime("%Y-%m")
            key = (action, pool, label)
            acc[key] = acc.get(key, 0) + int(amount)
        return [Usage(a, p, lbl, n) for (a, p, lbl), n in sorted(acc.items())]

    async def event_counts(self) -> dict[str, int]:
        rows = await self.fetch("SELECT kind, COUNT(*) FROM events GROUP BY kind")
        return {k: int(n) for k, n in rows}
