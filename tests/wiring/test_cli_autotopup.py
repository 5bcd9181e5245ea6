"""`creditgate autotopup` against the `make run` sidecar: its worker pays a crossing at once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from served_kit import MICRO, cli, pool, run_cli

if TYPE_CHECKING:
    from served_kit import Served


def test_autotopup_on_then_a_crossing_is_paid_by_the_worker(served: Served) -> None:
    """$10 bought; top up $10 at $5; spending $6 crosses; the embedded worker tops up."""
    cli(served.target, "account", "create", "cli-auto", "--plan", "shingle_pro")
    cli(served.target, "purchase", "cli-auto", "--id", "cli-auto-p1")
    shown = cli(served.target, "autotopup", "cli-auto")
    assert (shown["enabled"], shown["state"], shown["pool_id"]) == (False, "idle", "credits")
    text, bad = run_cli(
        served.target,
        [
            ("autotopup", "cli-auto", "--on", "--threshold", "5", "--amount", "10"),
            ("autotopup", "cli-auto", "--on", "--threshold", "5", "--amount", "4"),
        ],
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "threshold     $5.00" in lines
    assert "monthly max   unlimited" in lines
    assert bad.returncode == 1
    assert "auto top-up amount must be between $5.00 and $100,000.00, got $4.00" in bad.stderr
    cli(served.target, "check", "cli-auto", "shingle.api", "-q", "100000")
    cli(served.target, "check", "cli-auto", "shingle.api", "-q", "6000")  # $10 -> $4
    deadline = time.monotonic() + 20
    while True:
        state = cli(served.target, "autotopup", "cli-auto")
        if state["state"] == "idle" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert state["state"] == "idle", state
    assert int(state["balance"]) == 14 * MICRO
    balance = cli(served.target, "balance", "cli-auto")
    assert int(pool(balance, "credits")["balance"]) == 14 * MICRO
