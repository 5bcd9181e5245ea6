"""A real ``creditgate serve --embedded --demo`` sidecar for the CLI's tests, and its CLI.

``served`` (module scope) runs the sidecar as a subprocess with its private redis-server in a
temporary data directory; ``cli`` runs a client command against it with ``--json`` and parses
the answer; ``run_cli`` runs commands as they are typed and returns what they printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
CREDITGATE = Path(sys.executable).parent / "creditgate"
READY_TRIES = 150  # x up to ~0.1 s each
STOP_SECONDS = 5.0
MICRO = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sidecar_env(data_dir: Path) -> dict[str, str]:
    """The caller's environment without CREDITGATE_* settings, plus the test's own.

    CREDITGATE_EMBEDDED_SERVER stays: the sidecar runs the server the suite runs on.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CREDITGATE_") or k == "CREDITGATE_EMBEDDED_SERVER"
    }
    env |= {
        "CREDITGATE_METRICS_PORT": "0",
        "CREDITGATE_DATA_DIR": str(data_dir),
        "CREDITGATE_LEDGER_URL": f"sqlite:///{data_dir / 'ledger.db'}",
    }
    return env


def redis_servers(socket_path: Path) -> list[int]:
    """Pids of live redis-server or valkey-server processes on ``socket_path`` (from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited while we looked
        server = "redis-server" in cmdline or "valkey-server" in cmdline
        if server and str(socket_path) in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


@dataclass
class Served:
    """One ``creditgate serve --embedded --demo`` subprocess."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    processes: int = 1
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    stop_seconds: float | None = None
    own_group: bool = False  # its own session and process group, as a shell gives a command

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / f"serve-{self.port}.log"

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def start(self) -> None:
        """Start the server and return once health says SERVING (bounded number of tries)."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argument list
                [
                    str(CREDITGATE),
                    "serve",
                    "--embedded",
                    "--demo",
                    "--config",
                    "examples/demo.yaml",
                    "--listen",
                    self.target,
                ],
                cwd=ROOT,
                env=sidecar_env(self.data_dir)
                | {
                    "CREDITGATE_PROCESSES": str(self.processes),
                    "CREDITGATE_METRICS_PORT": str(self.metrics_port),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        request = health_pb2.HealthCheckRequest(service="")
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(READY_TRIES):
                if self.process.poll() is not None:
                    pytest.fail(
                        f"creditgate serve exited with {self.process.returncode}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    status = stub.Check(request, timeout=0.1).status
                except grpc.RpcError:
                    time.sleep(0.05)
                    continue
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"creditgate serve never reported SERVING:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then wait; records the exit status and how long it took. Idempotent."""
        if self.process is None or self.returncode is not None:
            return
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout=STOP_SECONDS + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait()
        self.stop_seconds = time.monotonic() - started


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The sidecar as `make run` starts it, on a fresh data directory."""
    server = Served(tmp_path_factory.mktemp("cli"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def restarted(served: Served) -> Iterator[Served]:
    """The sidecar started again on the data directory of ``served`` (stopped first)."""
    served.stop()
    server = Served(served.data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_cli(target: str, commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``creditgate --target <target> <command>`` for each command, all at once.

    Each client command pays the CLI's import time (about a second), so independent ones run
    side by side.
    """
    running = [
        subprocess.Popen(  # noqa: S603 - fixed argument list
            [str(CREDITGATE), "--target", target, *args],
            cwd=ROOT,
            env=sidecar_env(ROOT / "var"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for args, process in zip(commands, running, strict=True):
        stdout, stderr = process.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def cli(target: str, *args: str) -> Any:  # noqa: ANN401
    """Run ``creditgate --target <target> <args> --json``, require exit 0, return the JSON."""
    (done,) = run_cli(target, [(*args, "--json")])
    assert done.returncode == 0, (args, done.returncode, done.stderr)
    return json.loads(done.stdout)


def pool(balance: dict[str, Any], pool_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in balance["pools"] if p["pool_id"] == pool_id]
    assert found, (pool_id, balance)
    return found[0]


def _children(pid: int) -> list[tuple[int, bytes]]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(c) for c in children.read_text().split()] if children.exists() else []
    found = []
    for c in pids:
        try:
            found.append((c, Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")))
        except OSError:
            continue  # exited while we looked
    return found


def server_children(pid: int) -> list[int]:
    """The server processes ``pid`` started (not its Redis or Valkey server, nor its worker)."""
    return [
        c
        for c, cmdline in _children(pid)
        if not any(name in cmdline for name in (b"redis-server", b"valkey-server"))
        and b"creditgate worker" not in cmdline
    ]


def worker_children(pid: int) -> list[int]:
    """The ledger worker process ``pid`` started (``creditgate worker``)."""
    return [c for c, cmdline in _children(pid) if b"creditgate worker" in cmdline]
