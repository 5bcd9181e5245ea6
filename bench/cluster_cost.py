"""Redis CPU and memory per decision: one embedded redis-server against a 3-master cluster.

Run: .venv/bin/python bench/cluster_cost.py [--decisions N] [--accounts N] [--inflight N].
Both targets get the same work: ``--accounts`` accounts on one plan, then ``--decisions``
CheckAndConsume decisions (unique request ids, ``--inflight`` at a time) through the engine's
pipelined hot path (``FastRedis``, or ``ClusterFastRedis`` on the cluster). Redis's own CPU is
read from INFO cpu (used_cpu_user + used_cpu_sys, summed over the masters) before and after;
the script time from INFO commandstats (EVALSHA usec_per_call). Memory: INFO used_memory after
creating the accounts, and after the decisions (each leaves an idempotency record and an event
until the worker trims it), divided by the count. It also checks, on the cluster, that every
key a decision wrote lies in one slot per account (CLUSTER KEYSLOT of each key).

Prints one line per target and a JSON line. The cluster comes from tests/cluster_kit.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from redis import Redis

from creditgate.domain.catalog import compile_catalog
from creditgate.domain.plans_file import CatalogConfig
from creditgate.driver.cluster import ClusterFastRedis, cluster_client
from creditgate.driver.connect import redis_client
from creditgate.driver.pipelined import FastRedis, HotPath
from creditgate.engine import Engine
from creditgate.wiring.embedded.redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
CATALOG = compile_catalog(
    CatalogConfig.model_validate(
        {
            "meters": {"tok": "tokens"},
            "actions": {"use": {"meter": "tok", "cost": 1}},
            "plans": {
                "p": {
                    "order": ["month", "wallet"],
                    "pools": [
                        {"id": "month", "kind": "allowance", "meter": "tok", "amount": 10**6,
                         "period": "month"},
                        {"id": "wallet", "kind": "grant", "meter": "tok"},
                    ],
                }
            },
        }
    )
)  # fmt: skip


def _cluster_kit() -> Any:  # noqa: ANN401 - a module loaded by path
    spec = importlib.util.spec_from_file_location("cluster_kit", ROOT / "tests" / "cluster_kit.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster_kit"] = module
    spec.loader.exec_module(module)
    return module


def _stats(clients: list[Redis]) -> tuple[float, int, int, float]:
    """CPU seconds, used_memory, EVALSHA calls and EVALSHA usec, summed over ``clients``."""
    cpu, memory, calls, usec = 0.0, 0, 0, 0.0
    for c in clients:
        info: dict[str, Any] = c.info("cpu") | c.info("memory")
        cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        memory += int(info["used_memory"])
        stats = c.info("commandstats")
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            if name in stats:
                calls += int(stats[name]["calls"])
                usec += float(stats[name]["usec"])
    return cpu, memory, calls, usec


async def _measure(
    url: str, masters: list[Redis], *, cluster: bool, args: argparse.Namespace
) -> dict[str, Any]:
    redis = (cluster_client if cluster else redis_client)(url, timeout=5.0, max_connections=64)
    fast: HotPath = ClusterFastRedis(url) if cluster else FastRedis(url)
    engine = Engine(redis, CATALOG, fast=fast)
    accounts = [f"acct-{i}" for i in range(args.accounts)]
    try:
        _, mem0, _, _ = _stats(masters)
        for i in range(0, len(accounts), 100):
            await asyncio.gather(*(engine.create_account(a, "p", 1) for a in accounts[i : i + 100]))
        for a in accounts:  # the sidecar learns each plan: every decision below is a fast one
            await engine.consume(a, "use", 1, {}, "warm")
        cpu1, mem1, calls1, usec1 = _stats(masters)
        queue = iter(range(args.decisions))

        async def client() -> None:
            for n in queue:
                await engine.consume(accounts[n % len(accounts)], "use", 1, {}, f"d{n}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.inflight)))
        elapsed = time.perf_counter() - started
        cpu2, mem2, calls2, usec2 = _stats(masters)
        slots_ok = True
        if cluster:
            probe = masters[0]
            for a in accounts[:200]:
                keys = [*engine.keys.account(a, "d0"), engine.keys.record(a, "warm")]
                slots = {probe.execute_command("CLUSTER", "KEYSLOT", k) for k in keys}  # type: ignore[no-untyped-call]
                slots_ok = slots_ok and len(slots) == 1
    finally:
        await fast.aclose()
        await redis.aclose()
    n = args.decisions
    return {
        "masters": len(masters),
        "decisions_per_s": round(n / elapsed),
        "redis_cpu_us_per_decision": round((cpu2 - cpu1) / n * 1e6, 1),
        "evalsha_calls_per_decision": round((calls2 - calls1) / n, 3),
        "script_us_per_call": round((usec2 - usec1) / max(1, calls2 - calls1), 2),
        "bytes_per_account": round((mem1 - mem0) / len(accounts)),
        "bytes_per_decision": round((mem2 - mem1) / n),
        "one_slot_per_account": slots_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--inflight", type=int, default=64)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with EmbeddedRedis() as server, Redis.from_url(server.url) as single:
        out["single"] = asyncio.run(_measure(server.url, [single], cluster=False, args=args))
    with _cluster_kit().LocalCluster(3) as local:
        masters = [n.client() for n in local.live_masters()]
        try:
            out["cluster"] = asyncio.run(_measure(local.url, masters, cluster=True, args=args))
        finally:
            for m in masters:
                m.close()
    for name, row in out.items():
        print(f"{name:8} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
