"""The tokens file under concurrent CLI use, and tokens that must not fail open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from creditgate.auth.tokens import create_token, read_tokens
from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


_JOB = (
    "import sys; from pathlib import Path; from creditgate.auth import tokens; "
    "p = Path(sys.argv[2]); "
    "tokens.create_token(p, sys.argv[3], 'service') if sys.argv[1] == 'create' "
    "else tokens.revoke_token(p, sys.argv[3])"
)


def test_concurrent_creates_and_a_revoke_lose_nothing_and_revive_nothing(tmp_path: Path) -> None:
    """Eight creates and a revoke at once, from separate processes: all eight kept, victim gone."""
    path = tmp_path / "tokens.json"
    create_token(path, "victim", "service")
    jobs = [("create", f"t{i}") for i in range(8)] + [("revoke", "victim")]
    procs = [
        subprocess.Popen([sys.executable, "-c", _JOB, op, str(path), name])  # noqa: S603
        for op, name in jobs
    ]
    assert [p.wait(60) for p in procs] == [0] * len(jobs)
    names = sorted(e.name for e in read_tokens(path))
    assert names == [f"t{i}" for i in range(8)]


def test_cli_refuses_an_empty_accounts_list(tmp_path: Path) -> None:
    """`--accounts ''` (an unset shell variable) must not make a token valid for every account."""
    path = tmp_path / "tokens.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "creditgate", "token", "--file", str(path), "create",
         "--name", "app", "--role", "service", "--accounts", " , "],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--accounts names no account" in done.stderr
    assert not path.exists() or read_tokens(path) == []


def test_accounts_that_are_not_a_list_are_refused(tmp_path: Path) -> None:
    """A hand-written `"accounts": "acme"` is not read letter by letter."""
    path = tmp_path / "tokens.json"
    entry = {"name": "app", "role": "service", "sha256": "0" * 64, "accounts": "acme"}
    path.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(ConfigError, match="accounts must be a list"):
        read_tokens(path)
