"""A bad CREDITGATE_ variable stops a command with one line naming it, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from creditgate.wiring.settings import Settings, check_listen

_LISTEN_FORMS = "host:port, e.g. 127.0.0.1:50051, 0.0.0.0:50051 or [::]:50051"


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            ["serve"],
            {"CREDITGATE_IDEMPOTENCY_TTL_SECONDS": "10"},
            (
                "creditgate: invalid setting CREDITGATE_IDEMPOTENCY_TTL_SECONDS: Input should be "
                "greater than or equal to 86400 (got '10')"
            ),
        ),
        (
            ["serve", "--embedded"],
            {"CREDITGATE_SHARDS": "many"},
            (
                "creditgate: invalid setting CREDITGATE_SHARDS: Input should be a valid integer, "
                "unable to parse string as an integer (got 'many')"
            ),
        ),
        (
            ["serve"],
            {"CREDITGATE_HOLD_TTL_SECONDS": "999999"},
            (
                "creditgate: invalid setting CREDITGATE_HOLD_TTL_SECONDS: Value error, at most "
                "CREDITGATE_IDEMPOTENCY_TTL_SECONDS (86400) (got '999999')"
            ),
        ),
        (
            ["serve"],
            {"CREDITGATE_LISTEN": "127.0.0.1:99999"},
            (
                "creditgate: invalid setting CREDITGATE_LISTEN: Value error, the port 99999 is "
                "above 65535 (got '127.0.0.1:99999')"
            ),
        ),
        (
            ["serve", "--listen", "127.0.0.1"],
            {},
            (
                "creditgate: invalid setting CREDITGATE_LISTEN: Value error, no port: write "
                f"{_LISTEN_FORMS} (got '127.0.0.1')"
            ),
        ),
        (
            ["serve"],
            {"CREDITGATE_LISTEN": "garbage"},
            (
                "creditgate: invalid setting CREDITGATE_LISTEN: Value error, no port: write "
                f"{_LISTEN_FORMS} (got 'garbage')"
            ),
        ),
        (
            ["serve"],
            {"CREDITGATE_HEALTH_LISTEN": "bad host:8086"},
            (
                "creditgate: invalid setting CREDITGATE_HEALTH_LISTEN: Value error, no valid host "
                f"before the port: write {_LISTEN_FORMS} (got 'bad host:8086')"
            ),
        ),
        (
            ["serve"],
            {"CREDITGATE_MAX_BYTES_IN_FLIGHT": "1000"},
            (
                "creditgate: invalid setting CREDITGATE_MAX_BYTES_IN_FLIGHT: Input should be "
                "greater than or equal to 1048576 (got '1000')"
            ),
        ),
        (
            ["reconcile", "--check"],
            {"CREDITGATE_METRICS_PORT": "70000"},
            (
                "creditgate: invalid setting CREDITGATE_METRICS_PORT: Input should be less than or "
                "equal to 65535 (got '70000')"
            ),
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    command: list[str], env: dict[str, str], line: str
) -> None:
    """No pydantic traceback: the variable, the problem and the value, on one line."""
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "creditgate", *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == line + "\n"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:0",
        "0.0.0.0:65535",
        "[::]:50051",
        "localhost:1",
        "sidecar.ns.svc:443",
        "unix:///tmp/cg.sock",
    ],
)
def test_listen_forms_that_are_accepted(address: str) -> None:
    check_listen(address)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:65536", ":50051", "::1:50051", "[nope]:1", "127.0.0.1:50051\n", "x:-1"]
)
def test_listen_forms_that_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match=r"port|host|IPv6"):
        check_listen(address)


@pytest.mark.parametrize(
    ("timeout_s", "block_ms", "used_ms"),
    [("2.0", "1000", 1000), ("0.5", "1000", 250), ("0.5", "100", 100)],
)
def test_the_worker_block_stays_under_the_redis_timeout(
    monkeypatch: pytest.MonkeyPatch, timeout_s: str, block_ms: str, used_ms: int
) -> None:
    """A blocking read longer than the socket timeout times out: each idle read warned."""
    monkeypatch.setenv("CREDITGATE_REDIS_TIMEOUT_SECONDS", timeout_s)
    monkeypatch.setenv("CREDITGATE_WORKER_BLOCK_MS", block_ms)
    assert Settings().worker_block == used_ms
