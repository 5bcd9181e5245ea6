"""The ledger worker's lag while the sidecar serves at its peak decision rate.

    .venv/bin/python bench/worker_lag.py [--seconds 60] [--ledger-url URL]

``creditgate serve`` as ``make run`` ships it (ledger worker on, in a child process, SQLite
ledger; Redis is the same embedded redis-server, started here so that it can be watched), driven
by h2load at 64 in flight (4 connections x 16 streams, loopback) for ``--seconds``. Every second
the lag is sampled from Redis: entries not yet acknowledged by the ledger's consumer group, and
seconds = Redis time minus the time of the oldest unapplied entry (what the worker's gauge
``creditgate_ledger_lag_seconds`` reports). CPU per decision is given for the sidecar, Redis
and the worker separately. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import loadgen
import tools
from baselines import ATTRS
from redis.asyncio import Redis
from sidecar import PATH, provision, sidecar_env

from creditgate.engine import KeySpace
from creditgate.ledger.consumer import GROUP
from creditgate.v1 import quota_pb2
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.worker import streams


async def behind(redis: Redis, stream: str) -> tuple[int, float]:
    """(entries not yet acknowledged, seconds since the oldest of them) on ``stream``."""
    sec, usec = await redis.time()
    now_ms = sec * 1000 + usec // 1000
    oldest = await streams.oldest_unapplied(redis, stream, GROUP)
    if oldest is None:
        return 0, 0.0
    count = len(await redis.xrange(stream, min=streams.fmt(oldest), count=10**6) or [])
    return count, max(0, now_ms - oldest[0]) / 1000


async def caught_up(url: str, seconds: float = 60) -> None:
    redis = Redis.from_url(url)
    for _ in range(int(seconds * 5)):
        if not (await behind(redis, KeySpace("cg", 1).stream(0)))[0]:
            break
        await asyncio.sleep(0.2)
    await redis.aclose()


def sample(url: str, stop: threading.Event, out: list[tuple[int, float]]) -> None:
    async def loop() -> None:
        redis = Redis.from_url(url)
        while not stop.is_set():
            out.append(await behind(redis, KeySpace("cg", 1).stream(0)))
            await asyncio.sleep(1)
        await redis.aclose()

    asyncio.run(loop())


def measure(seconds: float, ledger_url: str) -> dict[str, float]:
    body = loadgen.grpc_body(
        quota_pb2.CheckAndConsumeRequest(
            account_id="bench-hot", action="agent.message", quantity=1, attributes=ATTRS
        )
    )
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp) / "r") as rd:
        asyncio.run(provision(rd.url, 0))
        target = f"127.0.0.1:{tools.free_port()}"
        env = sidecar_env(rd.url, target) | {
            "CREDITGATE_LEDGER_URL": ledger_url or f"sqlite:///{tmp}/ledger.db",
            "CREDITGATE_RUN_WORKER": "true",
            "CREDITGATE_MIGRATE_ON_START": "true",
        }
        cmd = [str(Path(sys.executable).parent / "creditgate"), "serve"]
        with tools.process(cmd, env) as side:
            tools.wait_serving(target)
            asyncio.run(caught_up(rd.url))  # the provisioning events, before the load starts
            workers = [p for p in tools.family(side.pid) if p != side.pid]
            samples: list[tuple[int, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample, args=(rd.url, stop, samples))
            worker_cpu = tools.cpu_seconds(workers)
            sampler.start()
            try:
                load = loadgen.h2load(
                    target,
                    PATH,
                    body,
                    clients=4,
                    streams=16,
                    seconds=seconds,
                    pids=[side.pid],
                    redis_pid=rd.pid,
                )
                worker_cpu = tools.cpu_seconds(workers) - worker_cpu
            finally:
                stop.set()
                sampler.join()
    lags = [s for _, s in samples]
    result = {
        "peak_decisions_per_s": load.rps,
        "lag_at_peak_s": max(lags),
        "lag_p50_s": statistics.median(lags),
        "entries_behind_max": max(n for n, _ in samples),
        "sidecar_cpu_us_per_decision": load.cpu_us_per_request,
        "redis_cpu_us_per_decision": load.redis_us_per_request,
        # The worker's CPU over the h2load run including its warm-up: an upper bound.
        "worker_cpu_us_per_decision": worker_cpu / load.requests * 1e6,
        "samples": len(samples),
        "seconds": seconds,
    }
    print(
        f"{load.rps:,.0f} decisions/s for {seconds:.0f} s: lag max {result['lag_at_peak_s']:.2f} s"
        f" (median {result['lag_p50_s']:.2f} s), at most {result['entries_behind_max']} entries"
        f" behind; CPU per decision: sidecar {load.cpu_us_per_request:.0f} us,"
        f" redis {load.redis_us_per_request:.0f} us,"
        f" worker {result['worker_cpu_us_per_decision']:.0f} us",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ledger-url", default="", help="default: SQLite in a temp dir")
    opts = parser.parse_args()
    if "h2load" in loadgen.ensure_tools():
        sys.exit("h2load is needed (apt-get install nghttp2-client)")
    print(json.dumps(measure(opts.seconds, opts.ledger_url)))


if __name__ == "__main__":
    main()
