"""Failure drills under load: each ends with no money lost, no charge doubled, reconcile clean.

Each drill runs a real sidecar process (ledger worker in it) against a real redis-server with
AOF, puts a bounded load of CheckAndConsume calls on it (8 callers, each id retried on
UNAVAILABLE or DEADLINE_EXCEEDED until it is answered), injects the fault, lifts it, and then
checks the money (``Drill.check_money``). It records how long failing calls took (at most the
Redis timeout + 50 ms), when readiness flipped, and that service came back without a restart.
Run with ``-s`` to see the figures; ``CREDITGATE_DRILL_FIGURES=path`` appends them as JSON lines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from drill_kit import TIMEOUT_S, Load

if TYPE_CHECKING:
    from drill_kit import Drill

pytestmark = pytest.mark.slow
BOUND_S = TIMEOUT_S + 0.05  # how long a failing call may take


def _fault_figures(drill: Drill, load: Load, fault: float, lifted: float) -> None:
    """How long calls took to fail, when readiness flipped, when service came back."""
    failed = [a for a in load.failed(since=fault) if a.sent_at < lifted]
    down = drill.health.first("NOT_SERVING", fault)
    up = drill.health.first("SERVING", lifted)
    ok = load.first_ok_after(lifted)
    drill.figures.update(
        failed_calls=len(failed),
        fail_codes=sorted({a.code for a in failed}),
        fail_max_ms=round(max((a.seconds for a in failed), default=0) * 1000, 1),
        health_down_after_ms=None if down is None else round((down - fault) * 1000),
        health_up_after_ms=None if up is None else round((up - lifted) * 1000),
        recovered_after_ms=None if ok is None else round((ok - lifted) * 1000),
    )
    assert failed, "the fault made no call fail: it was not drilled"
    assert max(a.seconds for a in failed) <= BOUND_S, drill.figures
    assert down is not None, f"readiness never went NOT_SERVING: {drill.health.changes}"
    assert ok is not None, "no call succeeded after the fault was lifted"
    assert up is not None, f"readiness never came back: {drill.health.changes}"


async def _run_with_fault(drill: Drill, inject: object, lift: object, hold_s: float) -> Load:
    load = Load(drill.quota, "L")
    pid = drill.sidecar.proc.pid if drill.sidecar.proc else None
    load.start()
    await asyncio.sleep(1.0)
    fault = time.monotonic()
    await asyncio.to_thread(inject)  # type: ignore[arg-type]
    await asyncio.sleep(hold_s)
    lifted = time.monotonic()
    await asyncio.to_thread(lift)  # type: ignore[arg-type]
    await asyncio.sleep(1.5)
    await load.stop()
    _fault_figures(drill, load, fault, lifted)
    assert drill.sidecar.proc is not None
    assert drill.sidecar.proc.pid == pid, "the sidecar was restarted"
    assert drill.sidecar.proc.poll() is None, "the sidecar exited"
    return load


async def test_redis_sigkill_under_load(drill: Drill) -> None:
    """Redis killed and restarted from its AOF: calls fail fast, health flips, service returns."""

    def kill() -> None:
        assert drill.redis.pid is not None
        os.kill(drill.redis.pid, signal.SIGKILL)

    def restart() -> None:
        drill.redis.stop()  # reaps the killed process
        drill.redis.start()

    load = await _run_with_fault(drill, kill, restart, hold_s=1.0)
    await drill.check_money([load])
    drill.record("redis_sigkill")


async def test_redis_sigstop_3s_under_load(drill: Drill) -> None:
    """Redis paused 3 s: calls end at the timeout as DEADLINE_EXCEEDED; retried ids charge once."""
    pid = drill.redis.pid
    assert pid is not None
    load = await _run_with_fault(
        drill, lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT), 3.0
    )
    codes = {a.code for a in load.failed()}
    assert "DEADLINE_EXCEEDED" in codes, codes
    await drill.check_money([load])
    drill.record("redis_sigstop_3s")


async def test_sidecar_sigkill_with_retries(drill: Drill) -> None:
    """The sidecar killed under load and started again: every retried id is charged once."""
    load = Load(drill.quota, "K")
    load.start()
    await asyncio.sleep(1.0)
    killed = time.monotonic()
    await asyncio.to_thread(drill.sidecar.kill)
    await asyncio.sleep(0.5)
    restarted = time.monotonic()
    drill.sidecar.start()
    await drill.wait_serving()
    drill.figures["serving_after_restart_ms"] = round((time.monotonic() - restarted) * 1000)
    await asyncio.sleep(1.0)
    await load.stop()
    failed = load.failed(since=killed)
    drill.figures["failed_calls"] = len(failed)
    drill.figures["fail_codes"] = sorted({a.code for a in failed})
    assert failed, "no call saw the dead sidecar"
    await drill.check_money([load])
    drill.record("sidecar_sigkill")
