"""The worker's recurring-charge ticker (ledger/due.py), on SQLite and PostgreSQL.

An account with no calls still pays its recurring charge at the period's start: the ticker
finds it in the ledger's mirror ('rcd') and brings it up to date through the engine. Every
account keeps its own frozen test clock here; a pass is given the instant to compare with.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from conftest import Ledger, make_worker
from creditgate.domain.errors import UnavailableError
from creditgate.engine.calls import admin as calls
from creditgate.ledger.due import RecurringTicker
from creditgate.ledger.sql import SqlLedger
from creditgate.worker.periodic import Periodic

if TYPE_CHECKING:
    import pytest

    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace

MICRO = 1_000_000


async def _fees(ledger: Ledger, engine: Engine, keys: KeySpace, account: str) -> list[str]:
    """The recurring charges of ``account`` in the ledger, once the worker applied them."""
    assert isinstance(ledger.store, SqlLedger)
    await make_worker(engine.redis, ledger.store, keys).drain()
    rows = await ledger.store.fetch(
        "SELECT request_id FROM events WHERE account = ? AND kind = 'charge' ORDER BY ver",
        (account,),
    )
    return [r[0] for r in rows if r[0].startswith("rec:")]


async def test_an_account_without_calls_pays_at_the_periods_start(
    ledger: Ledger, engine: Engine, keys: KeySpace
) -> None:
    assert isinstance(ledger.store, SqlLedger)
    ticker = RecurringTicker(engine, ledger.store)
    for account in ("quiet", "other"):
        await engine.create_account(account, "hosted")  # hosting 60 > 50 a day: unpaid
        await engine.grant(account, "wallet", 5 * MICRO, f"g-{account}")  # pays it
    first = await _fees(ledger, engine, keys, "quiet")
    assert [f.split(":")[1] for f in first] == ["support", "hosting"]
    state = await engine.balance("quiet")
    due = state.recurring[0].next_due  # hosting: the next UTC midnight on its clock
    assert await ticker.run_pass(now_ms=due - 1) == 0

    # The account's clock passes midnight with no call on it (the clock script alone).
    await engine.runner.call(calls.clock(engine.ctx, "quiet", 0, due + 5))
    assert await _fees(ledger, engine, keys, "quiet") == first
    assert await ticker.run_pass(now_ms=due + 5) == 2  # both are in the mirror as due
    # "other" was touched for nothing: its own clock has not reached the due.
    assert len(await _fees(ledger, engine, keys, "other")) == 2
    assert await _fees(ledger, engine, keys, "quiet") == [*first, f"rec:hosting:{due}"]
    assert await ticker.run_pass(now_ms=due + 5) == 1  # "other" only: "quiet" was charged
    assert await _fees(ledger, engine, keys, "quiet") == [*first, f"rec:hosting:{due}"]
    wallet = {p.pool_id: p.balance for p in (await engine.balance("quiet")).pools}["wallet"]
    assert wallet == 5 * MICRO - 400_000 - 100_000  # each hosting's 10 credits beyond the 50


async def test_the_worker_runs_the_ticker(ledger: Ledger, engine: Engine) -> None:
    """Consumers (the worker process) run a pass in burst mode; 0 turns the ticker off."""
    from creditgate.wiring.consumers import Consumers  # noqa: PLC0415 - wiring, over ledger
    from creditgate.wiring.settings import Settings  # noqa: PLC0415

    on = Consumers(Settings(recurring_tick_s=30), engine.redis, ledger.store, engine)
    off = Consumers(
        Settings(recurring_tick_s=0, payments_recovery_s=0), engine.redis, ledger.store, engine
    )
    assert [(p.name, p.interval_s) for p in on.periodic] == [
        ("recurring charges", 30),
        ("payments recovery", 60),
    ]
    assert off.periodic == []
    await engine.create_account("a", "hosted")
    assert await on.drain() > 0


async def test_a_timed_pass_survives_a_backend_away(caplog: pytest.LogCaptureFixture) -> None:
    """A pass that fails is logged (a backend away: one line) and the next one runs."""
    runs: list[int] = []
    periodic: Periodic

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            msg = "Redis could not be reached"
            raise UnavailableError(msg)
        if len(runs) == 2:
            msg = "a bug"
            raise ValueError(msg)
        periodic.stop()

    periodic = Periodic("test pass", step, 0.01)
    with caplog.at_level(logging.WARNING, logger="creditgate.worker"):
        await asyncio.wait_for(periodic.run(), 5)
    assert runs == [0, 1, 2]
    away, bug = caplog.records
    assert (away.levelname, away.exc_info) == ("WARNING", None)
    assert "Redis could not be reached; the next pass tries again" in away.getMessage()
    assert bug.levelname == "ERROR"
    assert bug.exc_info is not None
