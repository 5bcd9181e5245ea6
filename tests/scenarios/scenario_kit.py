"""Helpers every seed scenario uses: calendar instants, the test clock, debits as tuples."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tests.conftest import Sidecar

    from creditgate.v1 import quota_pb2


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Unix milliseconds of a UTC calendar instant."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


async def clock_to(sc: Sidecar, account_id: str, when_ms: int) -> None:
    """Move the account's frozen test clock to ``when_ms``."""
    await sc.admin.AdvanceTestClock(
        admin_pb2.AdvanceTestClockRequest(account_id=account_id, to_unix_ms=when_ms)
    )


def debits(rows: Iterable[quota_pb2.Debit]) -> list[tuple[str, int]]:
    """(pool, amount) of each debit, in order."""
    return [(x.pool_id, x.amount) for x in rows]
