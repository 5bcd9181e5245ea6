"""`creditgate purchase` against the `make run` sidecar: the embedded test provider, in dollars."""

from __future__ import annotations

from typing import TYPE_CHECKING

from served_kit import MICRO, cli, pool, run_cli

if TYPE_CHECKING:
    from served_kit import Served


def test_purchase_prints_dollars_and_replays(served: Served) -> None:
    """Default amount $10, an explicit $25; the same --id again charges nothing more."""
    cli(served.target, "account", "create", "cli-shop", "--plan", "shingle_pro")
    bought = cli(served.target, "purchase", "cli-shop", "--id", "cli-p1")
    assert (int(bought["amount"]), bought["status"]) == (10 * MICRO, "succeeded")
    assert bought["provider"] == "test provider — no real money moves"
    text, again = run_cli(
        served.target,
        [
            ("purchase", "cli-shop", "--amount", "25", "--id", "cli-p2"),
            ("purchase", "cli-shop", "--id", "cli-p1", "--json"),
        ],
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "amount        $25.00" in lines
    assert "provider      test provider — no real money moves" in lines
    assert again.returncode == 0, again.stderr
    assert '"replayed": true' in again.stdout
    assert int(pool(cli(served.target, "balance", "cli-shop"), "credits")["balance"]) == 35 * MICRO


def test_purchase_outside_the_limits_exits_1(served: Served) -> None:
    """$4.99 is below ShingleAI's $5 minimum: exit 1, the limit named on stderr."""
    cli(served.target, "account", "create", "cli-shop-2", "--plan", "shingle_free")
    (done,) = run_cli(served.target, [("purchase", "cli-shop-2", "--amount", "4.99")])
    assert done.returncode == 1
    assert (
        "creditgate: INVALID_ARGUMENT: amount $4.99 is below the plan's minimum purchase of $5.00"
        in done.stderr
    )
