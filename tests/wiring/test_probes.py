"""Probes and start-up of the real ``python -m creditgate serve`` process (issue 17, item 6).

The sidecar starts before its Redis exists: it must stay up, say once that it waits, answer
readiness NOT_SERVING and liveness SERVING, and turn SERVING (demo accounts provisioned) once a
redis-server appears on that address. Then Redis is paused (SIGSTOP) and killed under it:
the first failed call flips readiness and creditgate_redis_up, the poll flips them back, and
liveness stays SERVING throughout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from creditgate.transport.health import LIVENESS
from creditgate.v1 import quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis
from served_kit import ROOT, Served, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIMEOUT_S = 0.5  # CREDITGATE_REDIS_TIMEOUT_SECONDS of the sidecar
POLL_S = 2.0  # its health poll period
FAILED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _until(what: str, check: Callable[[], bool], seconds: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


class Probe:
    """The sidecar's health, metrics and one charge, as a kubelet, Prometheus and an app see it."""

    def __init__(self, target: str, metrics_port: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.quota = quota_pb2_grpc.QuotaServiceStub(self.channel)
        self.metrics_port = metrics_port

    def status(self, service: str = "") -> int:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(self.health.Check(request, timeout=1).status)
        except grpc.RpcError:
            return -1

    def redis_up(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "creditgate_redis_up":
                    return float(sample.value)
        pytest.fail("no creditgate_redis_up on /metrics")

    def charge(self, request_id: str) -> quota_pb2.Decision:
        request = quota_pb2.CheckAndConsumeRequest(
            account_id="demo-zite-pro", action="zite.email.send", quantity=1, request_id=request_id
        )
        return self.quota.CheckAndConsume(request, timeout=10)

    def failed_call_flips(self, label: str) -> float:
        """One call that must fail; returns how long after it readiness read NOT_SERVING."""
        with pytest.raises(grpc.RpcError) as excinfo:
            self.charge(f"{label}-fails")
        failed_at = time.monotonic()
        assert excinfo.value.code() in FAILED  # type: ignore[attr-defined]
        assert self.status("") == NOT_SERVING
        flipped = time.monotonic() - failed_at
        assert self.status("creditgate.v1.QuotaService") == NOT_SERVING
        assert self.redis_up() == 0
        assert self.status(LIVENESS) == SERVING
        return flipped


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Served, Probe]]:
    """``python -m creditgate serve --demo`` on a Unix socket where no Redis listens yet."""
    served = Served(tmp_path, metrics_port=free_port())
    socket_path = tmp_path / "redis" / "redis.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")} | {
        "CREDITGATE_REDIS_URL": f"unix://{socket_path}?db=0",
        "CREDITGATE_REDIS_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "CREDITGATE_LEDGER_URL": "",
        "CREDITGATE_METRICS_PORT": str(served.metrics_port),
        "CREDITGATE_LISTEN": served.target,
        "CREDITGATE_CONFIG": "examples/demo.yaml",
    }
    with served.log.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "creditgate", "serve", "--demo"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    probe = Probe(served.target, served.metrics_port)
    try:
        yield process, served, probe
    finally:
        probe.channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_serve_waits_for_redis_then_readiness_follows_it(
    waiting: tuple[subprocess.Popen[bytes], Served, Probe], tmp_path: Path
) -> None:
    """No crash without Redis; NOT_SERVING until it answers; flips at the first failed call."""
    process, served, probe = waiting
    _until("liveness SERVING", lambda: probe.status(LIVENESS) == SERVING, 30)
    assert probe.status("") == NOT_SERVING
    assert probe.redis_up() == 0
    time.sleep(1.0)  # longer than the old code took to crash
    assert process.poll() is None, served.log_tail()
    assert served.log.read_text().count("waiting for Redis") == 1

    with EmbeddedRedis(tmp_path / "redis") as redis:
        ready_after = _until("readiness SERVING", lambda: probe.status("") == SERVING, 10)
        assert probe.charge("first").allowed, "demo accounts were provisioned once Redis answered"
        assert probe.redis_up() == 1
        assert redis.pid is not None

        os.kill(redis.pid, signal.SIGSTOP)
        try:
            paused_flip = probe.failed_call_flips("paused")
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        back_after = _until(
            "SERVING after SIGCONT", lambda: probe.status("") == SERVING, 3 * POLL_S
        )
        assert probe.redis_up() == 1
        assert probe.charge("first").replayed

        os.kill(redis.pid, signal.SIGKILL)
        killed_flip = probe.failed_call_flips("killed")
        assert probe.status(LIVENESS) == SERVING
    assert process.poll() is None, served.log_tail()
    print(  # noqa: T201 - the figures for the report
        f"SERVING {ready_after:.2f} s after Redis appeared; NOT_SERVING read "
        f"{paused_flip * 1000:.1f} ms after the failed call (SIGSTOP), "
        f"{killed_flip * 1000:.1f} ms (SIGKILL); SERVING {back_after:.2f} s after SIGCONT"
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, served.log_tail()
