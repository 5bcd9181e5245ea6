"""The load tools and what they report: h2load, redis-benchmark, pgbench.

h2load drives gRPC over HTTP/2 with a pre-encoded body, or plain HTTP; a run's Load carries its
rate, latencies and the CPU time of the servers (sampled through bench/tools.py) and the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools import cpu_seconds, loop_cpu_seconds, machine_cpu

if TYPE_CHECKING:
    from google.protobuf.message import Message

WARM_UP_S = 1
IDLE_SHARE = 0.05  # a server process under this share of the CPU of all of them did no work
TOOLS = {
    "h2load": "nghttp2-client",
    "redis-benchmark": "redis-tools",
    "pgbench": "postgresql-client",
}


def ensure_tools(names: tuple[str, ...] = tuple(TOOLS)) -> list[str]:
    """Install missing load tools from Debian's packages when we can; list what is missing."""
    missing = [t for t in names if shutil.which(t) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({TOOLS[t] for t in missing})
        print(f"installing {', '.join(packages)} ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            check=False,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    return [t for t in names if shutil.which(t) is None]


def grpc_body(message: Message) -> bytes:
    """A gRPC length-prefixed message: what h2load sends as the request body."""
    data = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    machine_busy_s: float = 0.0  # every process on the machine, h2load included
    machine_s: float = 0.0  # busy + idle, all cores
    # Server processes that did (almost) no work during the run: with several processes on one
    # port, the kernel placed no connection on them (SO_REUSEPORT spreads connections, not
    # requests). Always 0 for a one-process server.
    idle_processes: int = 0
    loop_cpu_s: float = 0.0  # the server processes' main (event-loop) threads only

    def _per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self._per_request(self.cpu_s)

    @property
    def loop_us_per_request(self) -> float:
        return self._per_request(self.loop_cpu_s)

    @property
    def redis_us_per_request(self) -> float:
        return self._per_request(self.redis_cpu_s)

    @property
    def machine_us_per_request(self) -> float:
        return self._per_request(self.machine_busy_s)

    @property
    def machine_busy(self) -> float:
        """Share of the machine's CPU time that was busy during the run."""
        return self.machine_busy_s / self.machine_s if self.machine_s else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def h2load(
    target: str,
    path: str,
    body: bytes,
    *,
    clients: int,
    streams: int,
    seconds: float,
    pids: list[int],
    redis_pid: int | None = None,
) -> Load:
    """Drive gRPC method ``path`` with h2load for ``seconds`` after a warm-up; every call must pass.

    CPU is that of ``pids`` (the server), separately of ``redis_pid``, and of the whole machine,
    sampled over h2load's measured period (from the end of its warm-up to its exit), the same
    period its request count and log cover.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "body"
        data.write_bytes(body)
        load, stdout = _h2load(
            [f"--data={data}", *(f"-H{h}" for h in GRPC_HEADERS)],
            f"http://{target}{path}",
            clients=clients,
            streams=streams,
            seconds=seconds,
            pids=pids,
            redis_pid=redis_pid,
        )
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", stdout)
    if done is None or done.group(1) != done.group(2):
        msg = f"h2load failed or had errors:\n{stdout[-2000:]}"
        raise RuntimeError(msg)
    return load


def h2load_http(
    url: str,
    headers: tuple[str, ...],
    *,
    clients: int,
    streams: int,
    seconds: float,
    pids: list[int],
    redis_pid: int | None = None,
) -> tuple[Load, dict[str, int]]:
    """GET ``url`` (HTTP/2, prior knowledge) as ``h2load`` does; the Load and the answers' codes.

    The codes are h2load's classes of the measured period (``2xx``...``5xx``) and its
    ``errored`` and ``timeout`` requests; a non-2xx answer does not raise, the caller checks.
    """
    load, stdout = _h2load(
        [f"-H{h}" for h in headers],
        url,
        clients=clients,
        streams=streams,
        seconds=seconds,
        pids=pids,
        redis_pid=redis_pid,
    )
    return load, h2load_codes(stdout)


def h2load_codes(stdout: str) -> dict[str, int]:
    """The status classes and the errored and timed-out requests of an h2load report."""
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout)
    failed = re.search(r"(\d+) errored, (\d+) timeout", stdout)
    if codes is None or failed is None:
        msg = f"h2load said:\n{stdout[-2000:]}"
        raise RuntimeError(msg)
    names = ("2xx", "3xx", "4xx", "5xx", "errored", "timeout")
    values = [*codes.groups(), *failed.groups()]
    return {name: int(v) for name, v in zip(names, values, strict=True)}


def _h2load(
    options: list[str],
    url: str,
    *,
    clients: int,
    streams: int,
    seconds: float,
    pids: list[int],
    redis_pid: int | None,
) -> tuple[Load, str]:
    """Run h2load on ``url`` with ``options`` for ``seconds`` after a warm-up; Load and stdout."""

    def sample() -> tuple[float, float, float, float, float]:
        busy, total = machine_cpu()
        redis = cpu_seconds([redis_pid]) if redis_pid else 0.0
        return cpu_seconds(pids), redis, busy, total, loop_cpu_seconds(pids)

    each_before = [cpu_seconds([pid]) for pid in pids]

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        proc = subprocess.Popen(
            [
                "h2load",
                "-D",
                str(round(seconds)),
                "--warm-up-time",
                str(WARM_UP_S),
                "-c",
                str(clients),
                "-m",
                str(streams),
                "-t",
                "1",
                *options,
                f"--log-file={log}",
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(WARM_UP_S)
        before = sample()
        stdout, stderr = proc.communicate()
        cpu, redis_cpu, busy, machine, loop = (b - a for a, b in zip(before, sample(), strict=True))
        each = [cpu_seconds([pid]) - a for pid, a in zip(pids, each_before, strict=True)]
        if proc.returncode != 0:
            msg = f"h2load exited {proc.returncode}: {stdout[-1500:]} {stderr[-500:]}"
            raise RuntimeError(msg)
        # The log holds the measured requests only (not the warm-up's).
        times = [int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", stdout)
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", stdout)
    if done is None or rate is None:
        msg = f"h2load failed:\n{stdout[-2000:]}"
        raise RuntimeError(msg)
    load = Load(
        float(rate.group(1)),
        percentile(times, 0.5),
        percentile(times, 0.99),
        percentile(times, 0.999),
        int(done.group(1)),
        cpu,
        redis_cpu,
        busy,
        machine,
        sum(1 for c in each if c < IDLE_SHARE * cpu) if len(pids) > 1 else 0,
        loop,
    )
    return load, stdout


def median_load(runs: list[Load]) -> Load:
    """Field by field median of repeated runs."""
    return Load(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.p999_ms for r in runs),
        int(statistics.median(r.requests for r in runs)),
        statistics.median(r.cpu_s for r in runs),
        statistics.median(r.redis_cpu_s for r in runs),
        statistics.median(r.machine_busy_s for r in runs),
        statistics.median(r.machine_s for r in runs),
        max(r.idle_processes for r in runs),
        statistics.median(r.loop_cpu_s for r in runs),
    )


def redis_benchmark(
    socket_path: str,
    command: list[str],
    *,
    pipeline: int,
    keyspace: int,
    requests: int = 100_000,
    clients: int = 50,
) -> float:
    """Requests per second of one command (``__rand_int__`` varies keys and ids)."""
    out = subprocess.run(
        [
            "redis-benchmark",
            "-s",
            socket_path,
            "-n",
            str(requests),
            "-c",
            str(clients),
            "-P",
            str(pipeline),
            "-r",
            str(keyspace),
            "-q",
            *command,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.findall(r"([\d.]+) requests per second", out.stdout)
    if not found:
        msg = f"redis-benchmark said: {out.stdout[-500:]} {out.stderr[-500:]}"
        raise RuntimeError(msg)
    return float(found[-1])


def pgbench(url: str, script: str, *, clients: int, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(
            ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", f.name, url],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"tps = ([\d.]+)", out.stdout)
    if found is None:
        msg = f"pgbench said: {out.stdout[-500:]} {out.stderr[-500:]}"
        raise RuntimeError(msg)
    return float(found.group(1))
