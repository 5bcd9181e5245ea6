"""What the failure drills run: a real sidecar process, its Redis, its ledger, and a load.

Everything here is a real process on loopback or a Unix socket: ``redis-server`` (AOF on, so a
SIGKILL loses nothing it acknowledged), ``python -m creditgate serve`` with the ledger worker
running in it, and a bounded load of CheckAndConsume calls whose request ids are retried, as a
careful client does, until each has a definite answer. The drill then checks the money: every
id charged at most once, the balance down by exactly the charges, the ledger equal to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.v1 import admin_pb2, admin_pb2_grpc, quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis

CATALOG = """
meters: {credit: "drill credits"}
actions:
  use: {meter: credit, cost: 1}
plans:
  drill:
    pools:
      - {id: bonus, kind: grant, meter: credit}
"""
TIMEOUT_S = 0.5  # CREDITGATE_REDIS_TIMEOUT_SECONDS of the drilled sidecar
CREDITS = 2_000  # per account: the load runs some accounts dry, so depletion is drilled too
ACCOUNTS = ("drill-a", "drill-b", "drill-c", "drill-d")
RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
MICRO = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sidecar:
    """``creditgate serve`` as a child process on a fixed loopback port."""

    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "creditgate", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@dataclass
class Attempt:
    request_id: str
    code: str  # "OK" or a status name
    seconds: float
    sent_at: float


@dataclass
class Load:
    """Concurrent CheckAndConsume callers; each id retried until it has a definite answer."""

    quota: quota_pb2_grpc.QuotaServiceStub
    prefix: str
    concurrency: int = 8
    attempts: list[Attempt] = field(default_factory=list)
    allowed: dict[str, str] = field(default_factory=dict)  # request id -> account
    denied: set[str] = field(default_factory=set)
    _next: int = 0
    _running: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._running = True
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        """Stop taking new ids; callers finish the id they hold (it may need Redis back)."""
        self._running = False
        await asyncio.wait_for(asyncio.gather(*self._tasks), 60)

    async def _caller(self, n: int) -> None:
        while self._running:
            self._next += 1
            rid = f"{self.prefix}-{n}-{self._next}"
            account = ACCOUNTS[self._next % len(ACCOUNTS)]
            await self.settle_id(rid, account)

    async def settle_id(self, rid: str, account: str) -> None:
        """Call until the id is allowed or denied (what a client retrying the same id does)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                d = await self.quota.CheckAndConsume(
                    quota_pb2.CheckAndConsumeRequest(
                        account_id=account, action="use", quantity=1, request_id=rid
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                self.attempts.append(Attempt(rid, exc.code().name, time.monotonic() - start, start))
                if exc.code() not in RETRY:
                    raise
                await asyncio.sleep(0.02)
                continue
            self.attempts.append(Attempt(rid, "OK", time.monotonic() - start, start))
            if d.allowed:
                self.allowed[rid] = account
            else:
                self.denied.add(rid)
            return
        msg = f"request {rid} got no answer within 60 s"
        raise AssertionError(msg)

    def failed(self, since: float = 0.0) -> list[Attempt]:
        return [a for a in self.attempts if a.code != "OK" and a.sent_at >= since]

    def first_ok_after(self, moment: float) -> float | None:
        oks = [
            a.sent_at + a.seconds for a in self.attempts if a.code == "OK" and a.sent_at >= moment
        ]
        return min(oks) if oks else None


@dataclass
class HealthWatch:
    """Polls the readiness check every 10 ms and keeps each change with its time."""

    stub: health_pb2_grpc.HealthStub
    service: str = ""
    changes: list[tuple[float, str]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        last = ""
        while True:
            try:
                r = await self.stub.Check(
                    health_pb2.HealthCheckRequest(service=self.service), timeout=1
                )
                state = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.aio.AioRpcError as exc:
                state = f"error:{exc.code().name}"
            if state != last:
                self.changes.append((time.monotonic(), state))
                last = state
            await asyncio.sleep(0.01)

    def first(self, state: str, after: float) -> float | None:
        for moment, s in self.changes:
            if moment >= after and s == state:
                return moment
        return None


@dataclass
class Drill:
    """One drilled deployment: Redis, ledger, sidecar, and the figures it recorded."""

    tmp: Path
    ledger_url: str
    redis: EmbeddedRedis
    sidecar: Sidecar
    channel: grpc.aio.Channel
    quota: quota_pb2_grpc.QuotaServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    health: HealthWatch
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    async def wait_serving(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        stub = health_pb2_grpc.HealthStub(self.channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
        msg = f"the sidecar never became SERVING; its log:\n{self.sidecar.tail()}"
        raise AssertionError(msg)

    async def provision(self) -> None:
        for account in ACCOUNTS:
            await self.admin.CreateAccount(
                admin_pb2.CreateAccountRequest(account_id=account, plan_id="drill"), timeout=10
            )
            await self.admin.Grant(
                admin_pb2.GrantRequest(
                    account_id=account,
                    pool_id="bonus",
                    amount=CREDITS * MICRO,
                    grant_id=f"{account}-start",
                ),
                timeout=10,
            )

    async def balances(self) -> dict[str, int]:
        out = {}
        for account in ACCOUNTS:
            r = await self.quota.GetBalance(
                quota_pb2.GetBalanceRequest(account_id=account), timeout=10
            )
            out[account] = sum(p.balance for p in r.pools)
        return out

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own command
            [sys.executable, "-m", "creditgate", *args],
            env=self.sidecar.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def settle_ledger(self, seconds: float = 30) -> str:
        """Wait until ``reconcile --check`` exits 0 (the worker caught up); return its output."""
        deadline = time.monotonic() + seconds
        out = ""
        while time.monotonic() < deadline:
            done = await asyncio.to_thread(self.cli, "reconcile", "--check")
            out = done.stdout + done.stderr
            if done.returncode == 0:
                return out
            await asyncio.sleep(0.3)
        msg = f"reconcile never came clean:\n{out}"
        raise AssertionError(msg)

    async def check_money(self, loads: list[Load]) -> None:
        """Each id charged once at most; balances down by exactly the charges; ledger agrees."""
        ids: dict[str, str] = {}
        for load in loads:
            assert not set(load.allowed) & load.denied
            ids.update(load.allowed)
        spent = dict.fromkeys(ACCOUNTS, 0)
        for account in ids.values():
            spent[account] += MICRO
        now = await self.balances()
        for account in ACCOUNTS:
            assert now[account] == CREDITS * MICRO - spent[account], (account, now, spent)
        # Every allowed id, asked again, replays and charges nothing.
        for rid, account in list(ids.items())[:200]:
            d = await self.quota.CheckAndConsume(
                quota_pb2.CheckAndConsumeRequest(
                    account_id=account, action="use", quantity=1, request_id=rid
                ),
                timeout=10,
            )
            assert d.allowed
            assert d.replayed
        assert await self.balances() == now
        self.figures["charged"] = len(ids)
        self.figures["reconcile"] = (await self.settle_ledger()).strip().splitlines()[-1]

    def record(self, name: str) -> None:
        """Print the figures (pytest -s, or the CI log on failure) and keep them for the README."""
        line = json.dumps({"drill": name, **self.figures}, sort_keys=True)
        print(line)  # noqa: T201 - the drill's figures belong in the output
        out = os.environ.get("CREDITGATE_DRILL_FIGURES")
        if out:
            with Path(out).open("a") as f:
                f.write(line + "\n")


async def open_drill(tmp: Path, ledger_url: str) -> Drill:
    redis = EmbeddedRedis(tmp / "redis", appendonly=True).start()
    port = free_port()
    sidecar = Sidecar(sidecar_env(tmp, redis.url, ledger_url, port), port, tmp / "sidecar.log")
    sidecar.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    drill = Drill(
        tmp,
        ledger_url,
        redis,
        sidecar,
        channel,
        quota_pb2_grpc.QuotaServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
        HealthWatch(health_pb2_grpc.HealthStub(channel)),
    )
    await drill.wait_serving()
    await drill.provision()
    drill.health.start()
    return drill


async def close_drill(drill: Drill) -> None:
    await drill.health.stop()
    await drill.channel.close()
    drill.sidecar.stop()
    with contextlib.suppress(Exception):
        drill.redis.stop()


def sidecar_env(tmp: Path, redis_url: str, ledger_url: str, port: int) -> dict[str, str]:
    catalog = tmp / "plans.yaml"
    catalog.write_text(CATALOG)
    return {
        **os.environ,
        "CREDITGATE_LISTEN": f"127.0.0.1:{port}",
        "CREDITGATE_TARGET": f"127.0.0.1:{port}",
        "CREDITGATE_CONFIG": str(catalog),
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_LEDGER_URL": ledger_url,
        "CREDITGATE_RUN_WORKER": "true",
        "CREDITGATE_MIGRATE_ON_START": "true",
        "CREDITGATE_METRICS_PORT": "0",
        "CREDITGATE_REDIS_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "CREDITGATE_WORKER_BLOCK_MS": "100",
        "CREDITGATE_DATA_DIR": str(tmp / "var"),
        "CREDITGATE_LOG_LEVEL": "WARNING",
        "CREDITGATE_UVLOOP": "true",
    }
