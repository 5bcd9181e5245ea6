"""The notification tables of the ledger database (migration 0004), in the shared ``?`` SQL.

``enqueue`` is idempotent on the notification id: the notification row and its outbox rows (one
per matching enabled endpoint) are written in one transaction, or not at all, so a notification
lands in the outbox exactly once however often its event is redelivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from creditgate.domain.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.ledger.sql import Conn, SqlLedger


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    account: str  # '' : global
    url: str
    secrets: tuple[str, ...]  # newest first
    kinds: tuple[str, ...]  # empty: every kind
    enabled: bool
    disabled_reason: str
    created_ms: int

    def wants(self, account: str, kind: str) -> bool:
        return (
            self.enabled
            and self.account in {"", account}
            and (not self.kinds or kind in self.kinds)
        )


@dataclass(frozen=True, slots=True)
class NewNotification:
    notification_id: str
    account: str
    kind: str
    source: str  # the stream event id, or 'api'
    payload: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row as the dispatcher sees it."""

    notification_id: str
    endpoint_id: str
    state: str  # pending, delivered, failed, dropped
    attempts: int
    last_status: int
    url: str = ""
    secrets: tuple[str, ...] = ()
    enabled: bool = True
    payload: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    cursor: str
    notification_id: str
    account: str
    kind: str
    source: str
    payload: str
    created_ms: int
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Attempt:
    notification_id: str
    endpoint_id: str
    attempt: int
    time_ms: int
    status: int  # 0: no HTTP answer
    error: str
    duration_ms: int


_EP_COLUMNS = "endpoint_id, account, url, secrets, kinds, enabled, disabled_reason, created_ms"
_MAX_SEQ = 2**63 - 1


def _endpoint(r: Sequence[Any]) -> Endpoint:
    kinds = tuple(k for k in str(r[4]).split(",") if k)
    return Endpoint(r[0], r[1], r[2], tuple(json.loads(r[3])), kinds, bool(r[5]), r[6], int(r[7]))


class NotifyStore:
    """Endpoints, notifications, the outbox and the attempt log, in ``ledger``'s database."""

    def __init__(self, ledger: SqlLedger) -> None:
        self.db = ledger

    # --- endpoints -----------------------------------------------------------------------

    async def add_endpoint(self, ep: Endpoint) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                f"INSERT INTO webhook_endpoints ({_EP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",  # noqa: S608 - constant columns
                [(ep.endpoint_id, ep.account, ep.url, json.dumps(list(ep.secrets)),
                  ",".join(ep.kinds), int(ep.enabled), ep.disabled_reason, ep.created_ms)],
            )  # fmt: skip

    async def endpoints(self, account: str | None = None) -> list[Endpoint]:
        """Every endpoint (None), or those of one account ('' : the global ones)."""
        sql = f"SELECT {_EP_COLUMNS} FROM webhook_endpoints"  # noqa: S608 - constant columns
        rows = await (
            self.db.fetch(sql + " ORDER BY created_ms, endpoint_id")
            if account is None
            else self.db.fetch(
                sql + " WHERE account = ? ORDER BY created_ms, endpoint_id", (account,)
            )
        )
        return [_endpoint(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> Endpoint:
        rows = await self.db.fetch(
            f"SELECT {_EP_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?",  # noqa: S608 - constant columns
            (endpoint_id,),
        )
        if not rows:
            msg = f"no webhook endpoint {endpoint_id!r} (creditgate webhook list shows them)"
            raise NotFoundError(msg)
        return _endpoint(rows[0])

    async def set_secrets(self, endpoint_id: str, secrets: Sequence[str]) -> None:
        await self._update(endpoint_id, "secrets = ?", (json.dumps(list(secrets)),))

    async def set_enabled(self, endpoint_id: str, *, enabled: bool, reason: str = "") -> None:
        await self._update(
            endpoint_id,
            "enabled = ?, disabled_reason = ?",
            (int(enabled), "" if enabled else reason),
        )

    async def delete_endpoint(self, endpoint_id: str) -> None:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM webhook_endpoints WHERE endpoint_id = ? RETURNING endpoint_id",
                (endpoint_id,),
            )
            await conn.executemany(
                "UPDATE webhook_deliveries SET state = 'dropped' WHERE endpoint_id = ?"
                " AND state = 'pending'",
                [(endpoint_id,)],
            )
        if not rows:
            msg = f"no webhook endpoint {endpoint_id!r} (creditgate webhook list shows them)"
            raise NotFoundError(msg)

    async def _update(self, endpoint_id: str, assignments: str, args: tuple[Any, ...]) -> None:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                f"UPDATE webhook_endpoints SET {assignments} WHERE endpoint_id = ?"  # noqa: S608 - constant assignments
                " RETURNING endpoint_id",
                (*args, endpoint_id),
            )
        if not rows:
            msg = f"no webhook endpoint {endpoint_id!r} (creditgate webhook list shows them)"
            raise NotFoundError(msg)

    # --- the outbox ----------------------------------------------------------------------

    async def enqueue(self, items: Sequence[NewNotification]) -> int:
        """Write new notifications and their outbox rows in one transaction; count the new.

        Ids already present are skipped entirely.
        """
        if not items:
            return 0
        async with self.db.transaction() as conn:
            endpoints = [
                _endpoint(r)
                for r in await conn.fetch(
                    f"SELECT {_EP_COLUMNS} FROM webhook_endpoints WHERE enabled = 1"  # noqa: S608 - constant columns
                )
            ]
            new = 0
            for n in items:
                if await self._insert(conn, n):
                    new += 1
                    rows = [
                        (n.notification_id, e.endpoint_id, n.created_ms, n.created_ms)
                        for e in endpoints
                        if e.wants(n.account, n.kind)
                    ]
                    if rows:
                        await conn.executemany(
                            "INSERT INTO webhook_deliveries (notification_id, endpoint_id, state,"
                            " attempts, next_ms, last_status, updated_ms)"
                            " VALUES (?,?,'pending',0,?,0,?) ON CONFLICT DO NOTHING",
                            rows,
                        )
        return new

    @staticmethod
    async def _insert(conn: Conn, n: NewNotification) -> bool:
        rows = await conn.fetch(
            "INSERT INTO notifications (notification_id, account, kind, source, payload,"
            " created_ms) VALUES (?,?,?,?,?,?) ON CONFLICT (notification_id) DO NOTHING"
            " RETURNING notification_id",
            (n.notification_id, n.account, n.kind, n.source, n.payload, n.created_ms),
        )
        return bool(rows)

    async def claim_due(self, now_ms: int, lease_ms: int, limit: int) -> list[Delivery]:
        """Lease the pending deliveries due by ``now_ms`` until ``now_ms + lease_ms``.

        No other dispatcher takes them meanwhile; after a crash they are due again when the
        lease ends.
        """
        async with self.db.transaction() as conn:
            keys = await conn.fetch(
                "UPDATE webhook_deliveries SET next_ms = ? WHERE state = 'pending' AND next_ms <= ?"
                " AND (notification_id, endpoint_id) IN (SELECT notification_id, endpoint_id"
                " FROM webhook_deliveries WHERE state = 'pending' AND next_ms <= ?"
                " ORDER BY next_ms LIMIT ?) RETURNING notification_id, endpoint_id, attempts",
                (now_ms + lease_ms, now_ms, now_ms, limit),
            )
            out = []
            for nid, eid, attempts in keys:
                rows = await conn.fetch(
                    "SELECT n.payload, e.url, e.secrets, e.enabled FROM notifications n"
                    " LEFT JOIN webhook_endpoints e ON e.endpoint_id = ?"
                    " WHERE n.notification_id = ?",
                    (eid, nid),
                )
                payload, url, secrets, enabled = rows[0]
                out.append(
                    Delivery(nid, eid, "pending", int(attempts), 0, url or "",
                             tuple(json.loads(secrets or "[]")), bool(enabled), payload)
                )  # fmt: skip
        return out

    async def record(self, a: Attempt, state: str, next_ms: int, *, gone: str = "") -> None:
        """Record one attempt's outcome: its log row and the outbox row.

        With ``gone`` the endpoint is disabled with that reason, its pending rows dropped.
        """
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO webhook_attempts (notification_id, endpoint_id, attempt, time_ms,"
                " status, error, duration_ms) VALUES (?,?,?,?,?,?,?)",
                [(a.notification_id, a.endpoint_id, a.attempt, a.time_ms, a.status, a.error,
                  a.duration_ms)],
            )  # fmt: skip
            await conn.executemany(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_ms = ?,"
                " last_status = ?, updated_ms = ? WHERE notification_id = ? AND endpoint_id = ?",
                [(state, a.attempt, next_ms, a.status, a.time_ms, a.notification_id,
                  a.endpoint_id)],
            )  # fmt: skip
            if gone:
                await conn.executemany(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?"
                    " WHERE endpoint_id = ?",
                    [(gone, a.endpoint_id)],
                )
                await conn.executemany(
                    "UPDATE webhook_deliveries SET state = 'dropped', updated_ms = ?"
                    " WHERE endpoint_id = ? AND state = 'pending'",
                    [(a.time_ms, a.endpoint_id)],
                )

    async def drop(self, d: Delivery, now_ms: int) -> None:
        """A delivery whose endpoint was disabled or deleted meanwhile: never sent."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE webhook_deliveries SET state = 'dropped', updated_ms = ?"
                " WHERE notification_id = ? AND endpoint_id = ?",
                [(now_ms, d.notification_id, d.endpoint_id)],
            )

    # --- reads ---------------------------------------------------------------------------

    async def notifications(
        self, account: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Notification], str | None]:
        """An account's notifications, newest first, with their deliveries.

        Also the cursor of the next (older) page, None when there is none.
        """
        before = _MAX_SEQ if not cursor else int(cursor)
        rows = await self.db.fetch(
            "SELECT seq, notification_id, account, kind, source, payload, created_ms"
            " FROM notifications WHERE account = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (account, before, limit + 1),
        )
        out = []
        for r in rows[:limit]:
            ds = await self.db.fetch(
                "SELECT notification_id, endpoint_id, state, attempts, last_status"
                " FROM webhook_deliveries WHERE notification_id = ? ORDER BY endpoint_id",
                (r[1],),
            )
            deliveries = tuple(Delivery(d[0], d[1], d[2], int(d[3]), int(d[4])) for d in ds)
            out.append(Notification(str(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), deliveries))
        return out, (out[-1].cursor if len(rows) > limit else None)

    async def attempts(self, notification_id: str) -> list[Attempt]:
        rows = await self.db.fetch(
            "SELECT notification_id, endpoint_id, attempt, time_ms, status, error, duration_ms"
            " FROM webhook_attempts WHERE notification_id = ? ORDER BY id",
            (notification_id,),
        )
        return [Attempt(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5], int(r[6])) for r in rows]

    async def pending(self) -> int:
        rows = await self.db.fetch(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'"
        )
        return int(rows[0][0])
