"""`creditgate credits`, `transactions` and `usage` against the `make run` sidecar (its ledger).

The sidecar's worker applies events a moment after the charge, so each test waits until the
ledger shows what was done, as a person re-running the command would.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from served_kit import MICRO, cli, run_cli

if TYPE_CHECKING:
    from served_kit import Served

WAIT_S = 20.0


def settled(target: str, account: str, balance: int) -> dict[str, Any]:
    """``credits --json`` once the ledger shows ``balance`` (the worker has caught up)."""
    end = time.monotonic() + WAIT_S
    while True:
        card: dict[str, Any] = cli(target, "credits", account)
        if int(card.get("balance", 0)) == balance or time.monotonic() > end:
            return card
        time.sleep(0.2)


def test_credits_transactions_and_usage_print_dollars(served: Served) -> None:
    """The card in dollars with the running balance; pages by cursor; usage by action."""
    t = served.target
    cli(t, "account", "create", "cli-credits", "--plan", "shingle_pro")
    cli(t, "purchase", "cli-credits", "--amount", "25", "--id", "cli-credits-p1")
    cli(t, "check", "cli-credits", "shingle.sms", "-q", "600")  # 500 allowance, 100 x $0.03
    card = settled(t, "cli-credits", 22 * MICRO)
    assert (int(card["balance"]), int(card["lifetime_spent"])) == (22 * MICRO, 3 * MICRO)
    text, page, usage = run_cli(
        t,
        [
            ("credits", "cli-credits"),
            ("transactions", "cli-credits", "--pool", "credits", "--limit", "1", "--json"),
            ("usage", "cli-credits"),
        ],
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    words = [line.split() for line in lines]
    assert ["balance", "$22.00"] in words
    assert ["lifetime", "added", "$25.00"] in words
    assert ["low", "balance", "no"] in words  # at or below the plan's $2.00 it would say yes
    assert any(line.split()[:4] == ["consumption", "credits", "-$3.00", "$22.00"] for line in lines)
    assert any(line.split()[:4] == ["purchase", "credits", "$25.00", "$25.00"] for line in lines)
    assert any(line.split()[:2] == ["lag", "ms"] for line in lines)
    assert any(line.split()[:2] == ["caught", "up"] for line in lines)
    assert page.returncode == 0, page.stderr
    cursor = json.loads(page.stdout)["next_cursor"]
    (older,) = run_cli(
        t, [("transactions", "cli-credits", "--pool", "credits", "--cursor", cursor)]
    )
    assert older.returncode == 0, older.stderr
    assert "purchase:cli-credits-p1" in older.stdout
    assert usage.returncode == 0, usage.stderr
    rows = [line.split() for line in usage.stdout.splitlines()]
    assert ["shingle.sms", "credits", "$3.00"] in rows
    assert ["shingle.sms", "sms", "500", "sms"] in rows


def test_refusals_exit_1_with_the_reason(served: Served) -> None:
    """A bad cursor, a limit over 100, a plan without a balance pool: exit 1, the why on stderr."""
    cli(served.target, "account", "create", "cli-credits-2", "--plan", "zite_pro")
    cursor, limit, pool = run_cli(
        served.target,
        [
            ("transactions", "cli-credits-2", "--cursor", "bogus"),
            ("transactions", "cli-credits-2", "--limit", "500"),
            ("credits", "cli-credits-2"),
        ],
    )
    assert cursor.returncode == limit.returncode == pool.returncode == 1
    assert "INVALID_ARGUMENT: cursor 'bogus' is not a next_cursor" in cursor.stderr
    assert "INVALID_ARGUMENT: limit 500: give 1-100" in limit.stderr
    assert "FAILED_PRECONDITION: plan zite_pro has no balance pool" in pool.stderr
