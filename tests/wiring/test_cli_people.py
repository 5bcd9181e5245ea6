"""The CLI as a person uses it: amounts in their units, exit codes, help, hints, pipes.

Against the real ``make run`` sidecar of ``served_kit``; each command runs as it is typed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from creditgate.domain.wording import amount
from creditgate.v1 import admin_pb2
from creditgate.wiring.cli import client, parser
from creditgate.wiring.cli.render import render
from served_kit import CREDITGATE, ROOT, Served, free_port, run_cli, sidecar_env

if TYPE_CHECKING:
    from pathlib import Path

USAGE = 64


def _one(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    (done,) = run_cli(served.target, [args])
    return done


def test_amounts_render_in_their_units() -> None:
    """Credits keep their meter and thousands; money gets its sign and cents; -5 stays -5."""
    assert amount(5_000_000, "integration_credit") == "5 integration_credit"
    assert amount(1_234_500_000, "llm_token") == "1,234.5 llm_token"
    assert amount(20_000_000, "usd") == "$20.00"
    assert amount(4_990_000, "USD") == "$4.99"
    assert amount(1_500, "usd") == "$0.0015"
    assert amount(-5_000_000, "usd") == "-$5.00"


def test_terms_render_caps_and_rates_in_units() -> None:
    """A rate override shows its meter and a decimal rate; a cap range its decimals."""
    terms = admin_pb2.Terms(
        seats=1,
        rates=[admin_pb2.RateOverride(pool_id="credits", meter="glue_credit", rate=20_000)],
        caps=[admin_pb2.CapRange(pool_id="overage", cap_min=10_500_000, cap_max=-1)],
    )
    shown = "\n".join(render(terms))
    assert "glue_credit  0.02" in shown
    assert "10.5" in shown
    assert "unlimited" in shown
    assert "20000" not in shown
    assert "10500000" not in shown


def test_numbers_are_ascii_digits() -> None:
    """`1_000` and other scripts' digits are usage errors, as NaN is, never an amount."""
    for text in ("1_000", "\u0665\u0660\u0660", "\u00b2"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a"):
            client.amount(text)
        with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
            client.whole(text)
    assert client.whole("-3") == -3
    assert client.amount("12.5") == 12_500_000


def test_check_prints_credits_not_micro_units(served: Served) -> None:
    """An allowed check exits 0 and says what it cost in credits, with no micro-units."""
    done = _one(served, "check", "demo-zite-pro", "zite.email.send")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["allowed", "yes"]
    assert "cost        5 integration_credit" in lines
    assert "5000000" not in done.stdout
    assert any(line.split()[:1] == ["integration"] for line in lines)  # the balances table


def test_a_denied_check_exits_2_and_says_why(served: Served) -> None:
    """Denied is exit 2 (not 0), with the reason and the shortfall in credits."""
    done = _one(served, "check", "demo-zite-free", "zite.document.generate", "-q", "500")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout.splitlines()[0].split() == ["allowed", "no"]
    assert "insufficient_credits" in done.stdout
    assert "shortfall   4,000 integration_credit" in done.stdout


def test_balance_shows_money_in_dollars(served: Served) -> None:
    """A prepaid balance pool reads $20.00; an allowance's spend and cap are not money: '-'."""
    done = _one(served, "balance", "demo-shingle-pro")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert rows["pool"][:3] == ["pool", "id", "kind"]
    assert rows["credits"][:3] == ["credits", "balance", "$20.00"]
    assert rows["sms"][2:4] == ["500", "sms"]


def test_lots_show_their_pools_unit(served: Served) -> None:
    """A grant pool's lots are in the pool's unit too (the Lot message has no unit of its own)."""
    done = _one(served, "balance", "demo-agent-team")
    assert done.returncode == 0, done.stderr
    lot = next(line.split() for line in done.stdout.splitlines() if "demo-welcome" in line)
    assert lot[:3] == ["demo-welcome", "50", "agent_credit"]
    assert "50000000" not in done.stdout


def test_json_keeps_the_wire_form(served: Served) -> None:
    """--json is for machines: the proto's JSON, amounts in micro-units."""
    done = _one(served, "check", "demo-zite-pro", "zite.email.send", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert '"cost": "5000000"' in done.stdout


def test_bad_amounts_are_refused_in_the_units_typed(served: Served) -> None:
    """Grant -5 is a wrong command line (64) whose message speaks of -5, not -5000000."""
    done = _one(served, "grant", "demo-zite-pro", "bonus", "-5")
    assert done.returncode == USAGE
    assert "must be more than 0, got -5" in done.stderr
    assert "5000000" not in done.stderr
    assert "Traceback" not in done.stderr


def test_not_found_names_the_command_that_fixes_it(served: Served) -> None:
    """An unknown account: exit 1, the status, and the `account create` command to run."""
    done = _one(served, "check", "ghost", "zite.email.send")
    assert done.returncode == 1
    assert done.stderr.startswith("creditgate: NOT_FOUND: ")
    assert "hint: create it: creditgate account create ghost --plan PLAN" in done.stderr


def test_no_sidecar_says_how_to_start_one(tmp_path: Path) -> None:
    """Nothing listening: exit 1, UNAVAILABLE, and how to start a sidecar."""
    (done,) = run_cli(f"127.0.0.1:{free_port()}", [("balance", "acct-1")])
    assert done.returncode == 1, done.stderr
    assert "UNAVAILABLE" in done.stderr
    assert "creditgate serve --embedded" in done.stderr
    del tmp_path


def test_a_closed_pipe_is_not_a_traceback() -> None:
    """`creditgate plans --actions | head -1`: the reader leaves; no BrokenPipe traceback."""
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(  # noqa: S603 - our own command
        [str(CREDITGATE), "plans", "--actions"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=sidecar_env(ROOT / "var"),
        timeout=60,
        check=False,
    )
    os.close(write)
    assert done.returncode == 0
    assert done.stderr == ""


def test_plans_lists_each_plans_actions_and_prices() -> None:
    """`plans --actions` shows what each action costs on each plan, in its meter."""
    done = subprocess.run(
        [sys.executable, "-m", "creditgate", "plans", "--actions"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    zite_free = done.stdout.split("zite_free", 1)[1].split("\nzite_pro", 1)[0]
    assert "allowance 1,000 integration_credit/month" in zite_free
    assert "zite.email.send            5 integration_credit" in zite_free
    assert "glue.app_action" not in zite_free  # not payable on this plan
    glue_pro = done.stdout.split("glue_pro", 1)[1].split("\nzite_free", 1)[0]
    assert (
        "recurring base_hosting: 1 glue.base_hosting each cycle, free; 500 glue_credit with "
        "flag custom_integration; unpaid: stop"
    ) in glue_pro


def test_every_argument_has_help() -> None:
    """Each option and positional of every command says what it is."""
    missing = []
    stack = [("creditgate", parser())]
    while stack:
        name, command = stack.pop()
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {n}", p) for n, p in action.choices.items()]
            elif not action.help:
                missing.append(f"{name} {action.dest}")
    assert missing == []
