"""Benchmark plumbing: our own servers as child processes, their CPU time, the machine.

Everything here reads this machine's /proc or starts real programs; the load tools and their
output are bench/loadgen.py's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(target: str, seconds: float = 30) -> None:
    """Wait until a gRPC server (without a health service, as the floors) accepts a channel."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=seconds)


def wait_serving(target: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.2)
    msg = f"{target} did not become SERVING"
    raise RuntimeError(msg)


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the duration of the block (its own process group)."""
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def _stat_seconds(stats: list[str]) -> float:
    """User + system CPU time in these /proc stat files so far (gone ones count 0)."""
    total = 0
    for stat in stats:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far (their own threads, not their children)."""
    return _stat_seconds([f"/proc/{pid}/stat" for pid in pids])


def loop_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of each process's main thread: a server's event loop.

    grpc's own threads (its poller and event engine) are left out; ``cpu_seconds`` counts them.
    """
    return _stat_seconds([f"/proc/{pid}/task/{pid}/stat" for pid in pids])


def family(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    pids, i = [pid], 0
    while i < len(pids):
        children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children")
        with contextlib.suppress(FileNotFoundError):
            pids += [int(c) for c in children.read_text().split()]
        i += 1
    return pids


def machine_cpu() -> tuple[float, float]:
    """(busy, busy + idle) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLOCK_TICKS, sum(fields) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Python {sys.version.split()[0]}"
