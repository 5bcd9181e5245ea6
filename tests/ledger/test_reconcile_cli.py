"""``creditgate reconcile`` through the real command, in the disaster it exists for.

Exit status 0: Redis and the ledger agree (accounts Redis lost, only in the ledger, are listed
and agree: they load on first use); 1: they differ; 2: it could not run, or a named account
exists nowhere, with one line saying why and no traceback. Without flags it finds the embedded
Redis that ``serve --embedded`` runs in the data dir, as ``make run`` leaves it. Also here:
``serve --embedded --demo`` restarted on a wiped Redis keeps every balance and replays every
retried request id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis as AsyncRedis

from cluster_kit import ON_CLUSTER
from conftest import SHARDS, Ledger, Workload, make_worker
from creditgate.wiring.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import Iterator

    from creditgate.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
CREDITGATE = Path(sys.executable).parent / "creditgate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster(env: dict[str, str]) -> dict[str, str]:
    """The suite's Redis may be a cluster (CREDITGATE_TEST_CLUSTER=1): the command must know.

    Only a TCP URL there is the suite's; the tests' own servers listen on Unix sockets.
    """
    url = env.get("CREDITGATE_REDIS_URL", "")
    return {"CREDITGATE_REDIS_CLUSTER": "true"} if ON_CLUSTER and url.startswith("redis://") else {}


def creditgate(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``creditgate`` command with only the given CREDITGATE_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    return subprocess.run(  # noqa: S603 - our own command with fixed arguments
        [str(CREDITGATE), *args],
        cwd=cwd,
        env=clean | {"CREDITGATE_LOG_LEVEL": "WARNING", **_cluster(env)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def could_not_run(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr naming the problem, and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("creditgate reconcile: could not run: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


# --- against a Redis and a ledger of each kind ---------------------------------------------


async def test_check_on_a_wiped_redis_then_repair_then_check(
    ledger: Ledger, engine: Engine, workload: Workload, redis_url: str
) -> None:
    """Empty Redis: accounts only in the ledger agree (exit 0); a real difference is exit 1."""
    env = {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_LEDGER_URL": ledger.url,
        "CREDITGATE_SHARDS": str(SHARDS),
    }
    await workload.create(6)
    accounts = list(workload.accounts)
    await workload.run(200)
    await make_worker(engine.redis, ledger.store, engine.keys).drain()
    agree = creditgate("reconcile", "--check", **env)
    assert agree.returncode == 0, agree.stdout + agree.stderr
    assert agree.stdout.endswith("Redis and the ledger agree\n")
    await engine.redis.flushdb()
    await engine.redis.script_flush()
    lost = creditgate("reconcile", "--check", **env)
    assert lost.returncode == 0, lost.stdout + lost.stderr
    assert lost.stdout == "".join(
        f"account {a}: only in ledger (rehydrates on first use)\n" for a in sorted(accounts)
    ) + ("Redis and the ledger agree; 6 account(s) only in ledger (rehydrate on first use)\n")
    # Redis holding a part of an account is a difference (hydration would not fill it in).
    await engine.redis.hset(engine.keys.account(accounts[0])[0], "status", "active")
    differ = creditgate("reconcile", "--check", **env)
    assert differ.returncode == 1, differ.stdout + differ.stderr
    assert f"account {accounts[0]}: " in differ.stdout
    assert differ.stdout.endswith("1 account(s) differ\n"), differ.stdout
    assert "Traceback" not in differ.stderr
    repaired = creditgate("reconcile", "--repair", **env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout == "rebuilt 6 accounts from the ledger\n"
    again = creditgate("reconcile", "--check", **env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == "Redis and the ledger agree\n"


async def test_an_account_that_exists_nowhere_is_exit_2(
    ledger: Ledger, engine: Engine, workload: Workload, redis_url: str
) -> None:
    """A named account in neither Redis nor the ledger (a typo) is not agreement: exit 2."""
    env = {
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_LEDGER_URL": ledger.url,
        "CREDITGATE_SHARDS": str(SHARDS),
    }
    await workload.create(1)
    (known,) = workload.accounts
    await make_worker(engine.redis, ledger.store, engine.keys).drain()
    for mode in ("--check", "--repair"):
        done = creditgate("reconcile", mode, known, "nosuch", **env)
        could_not_run(done, "no account 'nosuch' in Redis or in the ledger: check the name")
        assert done.stdout == ""
    done = creditgate("reconcile", "--check", known, **env)
    assert (done.returncode, done.stdout) == (0, "Redis and the ledger agree\n"), done.stderr


async def test_check_of_empty_redis_and_empty_ledger_agrees(
    ledger: Ledger, redis: AsyncRedis, redis_url: str
) -> None:
    """Nothing anywhere (no stream, no group) is agreement, not a crash."""
    assert await redis.dbsize() == 0
    done = creditgate(
        "reconcile", "--check", CREDITGATE_REDIS_URL=redis_url, CREDITGATE_LEDGER_URL=ledger.url
    )
    assert (done.returncode, done.stdout) == (0, "Redis and the ledger agree\n"), done.stderr


@pytest.mark.skipif(ON_CLUSTER, reason="about one unreachable node; runs in the single-node pass")
async def test_unreachable_redis_is_exit_2_with_one_line(ledger: Ledger, tmp_path: Path) -> None:
    """A Redis that does not answer, over TCP or a Unix socket: exit 2, the URL named."""
    tcp = f"redis://127.0.0.1:{_free_port()}/0"
    unix = f"unix://{tmp_path}/gone.sock"
    for url, mode in ((tcp, "--check"), (tcp, "--repair"), (unix, "--check")):
        done = creditgate(
            "reconcile", mode, CREDITGATE_REDIS_URL=url, CREDITGATE_LEDGER_URL=ledger.url
        )
        could_not_run(done, url.split("?")[0], "ConnectionError")


def test_unreachable_or_missing_ledger_is_exit_2_with_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    """A PostgreSQL that does not answer, or no SQLite file: exit 2, nothing created."""
    pg = f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    done = creditgate(
        "reconcile", "--check", CREDITGATE_REDIS_URL=redis_url, CREDITGATE_LEDGER_URL=pg
    )
    could_not_run(done, "PostgreSQL ledger unavailable")
    missing = tmp_path / "none" / "ledger.db"
    done = creditgate(
        "reconcile",
        "--check",
        CREDITGATE_REDIS_URL=redis_url,
        CREDITGATE_LEDGER_URL=f"sqlite:///{missing}",
    )
    could_not_run(done, f"no ledger at {missing}")
    assert not missing.parent.exists()


def test_no_embedded_redis_in_the_data_dir_is_exit_2(tmp_path: Path) -> None:
    """--data-dir names where serve --embedded should run; nothing there is said plainly."""
    done = creditgate("reconcile", "--check", "--data-dir", str(tmp_path))
    could_not_run(done, f"no embedded Redis runs in the data dir {tmp_path}")
    done = creditgate("reconcile", "--check", CREDITGATE_REDIS_URL="embedded", cwd=tmp_path)
    could_not_run(done, "no embedded Redis runs in the data dir var")


# --- serve --embedded --demo, as `make run` starts it ------------------------------------


@dataclass
class Sidecar:
    """``creditgate serve --embedded --demo`` with the default data dir (var) under ``cwd``."""

    cwd: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
        config = str(ROOT / "examples" / "demo.yaml")
        with (self.cwd / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                [str(CREDITGATE), "serve", "--embedded", "--demo", "--config", config],
                cwd=self.cwd,
                env=clean | {"CREDITGATE_LISTEN": self.target, "CREDITGATE_METRICS_PORT": "0"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        request = health_pb2.HealthCheckRequest()
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(200):
                assert self.process.poll() is None, (self.cwd / "serve.log").read_text()
                try:
                    if (
                        stub.Check(request, timeout=0.2).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        pytest.fail("serve never reported SERVING:\n" + (self.cwd / "serve.log").read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, *args: str) -> dict[str, object]:
        done = creditgate("--target", self.target, *args, "--json", cwd=self.cwd)
        assert done.returncode == 0, (args, done.stderr)
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    def reconciled(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``reconcile --check`` once the in-process worker caught up (at most ~15 s)."""
        for _ in range(30):
            done = creditgate("reconcile", "--check", *args, cwd=cwd or self.cwd)
            if "not applied every event yet" not in done.stdout:
                return done
            time.sleep(0.5)
        return done


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    server = Sidecar(tmp_path, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_reconcile_finds_the_embedded_redis_of_make_run(sidecar: Sidecar, tmp_path: Path) -> None:
    """No flags in serve's directory, or --data-dir from elsewhere: the embedded socket is used."""
    sidecar.client("check", "demo-zite-pro", "zite.email.send", "--request-id", "r-1")
    done = sidecar.reconciled()
    assert (done.returncode, done.stdout) == (0, "Redis and the ledger agree\n"), done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sidecar.reconciled("--data-dir", str(tmp_path / "var"), "demo-zite-pro", cwd=elsewhere)
    assert (done.returncode, done.stdout) == (0, "Redis and the ledger agree\n"), done.stderr


def _wipe_embedded_redis(data_dir: Path) -> None:
    """Remove what the stopped embedded Redis persisted, so that it restarts empty."""
    redis_dir = data_dir / "redis"
    removed = [p for p in redis_dir.iterdir() if p.name.startswith(("appendonly", "dump"))]
    assert removed, list(redis_dir.iterdir())
    for path in removed:
        if path.is_dir():
            for inner in path.iterdir():
                inner.unlink()
            path.rmdir()
        else:
            path.unlink()


def test_demo_restarted_on_a_wiped_redis_keeps_balances_and_replays(sidecar: Sidecar) -> None:
    """Demo sidecar restarted on an empty Redis: nothing re-provisioned, retries replay."""
    ids = [f"retry-{i}" for i in range(5)]
    for rid in ids:
        sidecar.client("check", "demo-zite-pro", "zite.email.send", "--request-id", rid)
    before = sidecar.client("balance", "demo-zite-pro")["pools"]
    assert sidecar.reconciled().returncode == 0  # the worker has it all
    sidecar.stop()
    _wipe_embedded_redis(sidecar.cwd / "var")
    sidecar.start()
    for rid in ids:
        again = sidecar.client("check", "demo-zite-pro", "zite.email.send", "--request-id", rid)
        assert again["replayed"] is True, again
    assert sidecar.client("balance", "demo-zite-pro")["pools"] == before
    done = sidecar.reconciled()
    assert (done.returncode, done.stdout) == (0, "Redis and the ledger agree\n"), done.stderr


async def test_redis_timeout_setting_bounds_a_paused_redis(tmp_path: Path, ledger: Ledger) -> None:
    """A Redis that accepts but never answers (SIGSTOP): exit 2 after the timeout, one line."""
    with EmbeddedRedis(tmp_path / "r") as server:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            done = creditgate(
                "reconcile",
                "--check",
                CREDITGATE_REDIS_URL=server.url,
                CREDITGATE_LEDGER_URL=ledger.url,
                CREDITGATE_REDIS_TIMEOUT_SECONDS="0.5",
            )
        finally:
            os.kill(server.pid, signal.SIGCONT)
        could_not_run(done, "TimeoutError")
        client = AsyncRedis.from_url(server.url)
        assert await client.ping()
        await client.aclose()


def test_a_ledger_password_is_not_printed(tmp_path: Path, redis_url: str) -> None:
    """`reconcile` that cannot reach PostgreSQL names the URL without its password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    env["CREDITGATE_LEDGER_URL"] = "postgresql://u:s3cretpw@127.0.0.1:1/x"
    env["CREDITGATE_REDIS_URL"] = redis_url
    done = subprocess.run(
        [sys.executable, "-m", "creditgate", "reconcile", "--check"],
        capture_output=True, text=True, env=env, check=False, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "ledger postgresql://127.0.0.1:1/x" in done.stderr
    assert "s3cretpw" not in done.stdout + done.stderr
