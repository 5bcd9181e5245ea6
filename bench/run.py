"""`make bench`: creditgate against its baselines, measured in one run on this machine.

1. the floor: a bare grpc.aio server with creditgate's proto answering a constant Decision, and
   the same floor waiting for one Redis PING per request (the floor of any Redis-backed gate);
2. creditgate CheckAndConsume on one hot account at 1, 16, 64 and 256 requests in flight (h2load),
   and its CPU time per decision on 1 versus 100,000 accounts (bench/load.py);
3. the Redis ceiling: redis-benchmark EVALSHA of creditgate's own consume script;
4. the PostgreSQL baseline: pgbench running a row-lock debit on one hot row and on 100,000 rows;
5. CheckAndConsumeBatch in decisions per second;
6. HTTP through a real Envoy: no filter, the rate-limit filter against a constant-OK floor and
   against creditgate as `make run` serves it (bench/envoy_path.py, also runnable alone).

Every figure is the median of RUNS runs; ratios are taken pair by pair (floor run i against
sidecar run i). Writes docs/BENCHMARKS.md and prints one JSON object as its last line. The
sidecar it stands up (settings, accounts, paths, levels, processes) is bench/sidecar.py's,
shared with the scripts that measure one part of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import envoy_path
import loadgen
import tools
import worker_drain
import worker_lag
from baselines import (
    ATTRS,
    evalsha_time,
    find_postgres,
    per_call,
    postgres_baseline,
    redis_ceiling,
)
from sidecar import BATCH_PATH, LEVELS, PATH, processes_of, provision, sidecar_env, warm_up

from creditgate.v1 import quota_pb2
from creditgate.wiring.embedded.redis import EmbeddedRedis


def measure_levels(
    servers: dict[str, tuple[str, list[int], int | None]],
    body: bytes,
    runs: int,
    seconds: float,
    socket_path: str,
) -> dict[int, dict[str, object]]:
    """h2load on each server at each level, in turns; medians and pair-by-pair ratios.

    For the sidecar it also reads how long redis-server spent inside EVALSHA per call.
    """
    levels: dict[int, dict[str, object]] = {}
    for inflight, (conns, streams) in LEVELS.items():
        print(f"h2load at {inflight} in flight ...", file=sys.stderr)
        loads: dict[str, list[loadgen.Load]] = {name: [] for name in servers}
        script_us: list[float] = []
        for _ in range(runs):
            for name, (target, pids, redis_pid) in servers.items():
                before = evalsha_time(socket_path)
                loads[name].append(
                    loadgen.h2load(
                        target,
                        PATH,
                        body,
                        clients=conns,
                        streams=streams,
                        seconds=seconds,
                        pids=pids,
                        redis_pid=redis_pid,
                    )
                )
                if name == "sidecar":
                    script_us.append(per_call(before, evalsha_time(socket_path)))
        pairs = list(zip(loads["floor"], loads["ping"], loads["sidecar"], strict=True))
        levels[inflight] = {
            **{name: loadgen.median_load(runs_) for name, runs_ in loads.items()},
            "ratio": statistics.median(s.rps / f.rps for f, _, s in pairs),
            "ping_ratio": statistics.median(p.rps / f.rps for f, p, _ in pairs),
            "p50_ratio": statistics.median(s.p50_ms / f.p50_ms for f, _, s in pairs),
            "script_us": statistics.median(script_us),
        }
        if "sidecars" in loads:
            many = list(zip(loads["floor"], loads["sidecars"], strict=True))
            levels[inflight] |= {
                "many_ratio": statistics.median(m.rps / f.rps for f, m in many),
                "many_p50_ratio": statistics.median(m.p50_ms / f.p50_ms for f, m in many),
                "many_p50_added_ms": statistics.median(m.p50_ms - f.p50_ms for f, m in many),
                # Runs in which at least one process got no connection at all.
                "lopsided": sum(1 for m in loads["sidecars"] if m.idle_processes),
                "connections": conns,
            }
    return levels


def account_cost(target: str, pids: list[int], accounts: int) -> float:
    """Server CPU microseconds per decision in one bench/load.py run over ``accounts``."""
    cpu0 = tools.cpu_seconds(pids)
    out = subprocess.run(
        [sys.executable, str(tools.ROOT / "bench" / "load.py"), target, "4", "64", str(accounts)],
        capture_output=True,
        text=True,
        check=True,
    )
    return (tools.cpu_seconds(pids) - cpu0) / int(out.stdout.split()[-1]) * 1e6


def account_costs(target: str, pids: list[int], accounts: int, runs: int) -> dict[str, Any]:
    """CPU per decision on one account and on ``accounts``, run pair by pair (one, then many).

    Each pair's ratio is taken within the pair, so drift over the run (the machine's other
    load, the sidecar's own state) falls on both sides of it; the result holds the medians.
    """
    hot, spread = [], []
    for _ in range(runs):
        hot.append(account_cost(target, pids, 1))
        spread.append(account_cost(target, pids, accounts))
    return {
        "hot": statistics.median(hot),
        "spread": statistics.median(spread),
        "ratio": statistics.median(s / h for h, s in zip(hot, spread, strict=True)),
        "pairs": [[round(h, 1), round(s, 1)] for h, s in zip(hot, spread, strict=True)],
    }


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="CREDITGATE_PROCESSES of the second sidecar measured (default: one per core)",
    )
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--postgres", help="PostgreSQL URL for pgbench (default: local if up)")
    parser.add_argument("--drain-events", type=int, default=50_000, help="worker burst drain")
    parser.add_argument("--lag-seconds", type=float, default=60, help="worker lag at peak")
    parser.add_argument("--soak", type=int, default=0, help="also run a memory soak (seconds)")
    parser.add_argument(
        "--no-envoy", action="store_true", help="skip HTTP through Envoy (bench/envoy_path.py)"
    )
    parser.add_argument("--out", default=str(tools.ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite OUT from the raw measurements saved beside it",
    )
    return parser.parse_args()


def main() -> int:
    opts = _options()
    if opts.report_only:
        from report import load  # noqa: PLC0415 - kept beside this script

        out = Path(opts.out)
        print(json.dumps(report(load(out.with_suffix(".json")), out)))
        return 0
    missing = loadgen.ensure_tools()
    if "h2load" in missing:
        print("h2load is needed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    results: dict[str, object] = {"machine": tools.machine()}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp) / "redis") as rd:
        socket_path = rd.url.removeprefix("unix://").split("?")[0]
        print("provisioning accounts ...", file=sys.stderr)
        memory = asyncio.run(provision(rd.url, opts.accounts))
        floor_port, side_port, ping_port = tools.free_port(), tools.free_port(), tools.free_port()
        floor_target, side_target = f"127.0.0.1:{floor_port}", f"127.0.0.1:{side_port}"
        ping_target = f"127.0.0.1:{ping_port}"
        env = sidecar_env(rd.url, side_target)
        floor_cmd = [
            sys.executable,
            str(tools.ROOT / "bench" / "floor.py"),
            str(floor_port),
            "--uvloop",
        ]
        ping_cmd = [*floor_cmd[:2], str(ping_port), "--uvloop", "--redis", rd.url]
        side_cmd = [str(Path(sys.executable).parent / "creditgate"), "serve"]
        body = loadgen.grpc_body(
            quota_pb2.CheckAndConsumeRequest(
                account_id="bench-hot", action="agent.message", quantity=1, attributes=ATTRS
            )
        )
        batch = loadgen.grpc_body(
            quota_pb2.CheckAndConsumeBatchRequest(
                requests=[
                    quota_pb2.CheckAndConsumeRequest(
                        account_id="bench-hot", action="agent.message", quantity=1, attributes=ATTRS
                    )
                ]
                * 100
            )
        )
        many_target = f"127.0.0.1:{tools.free_port()}"
        # The headline configuration: as `make run` ships it, ledger worker on (a child process,
        # SQLite). The one-process sidecar above runs without the ledger: a diagnostic row.
        many_env = env | {
            "CREDITGATE_LISTEN": many_target,
            "CREDITGATE_PROCESSES": str(opts.processes),
            "CREDITGATE_LEDGER_URL": f"sqlite:///{tmp}/ledger.db",
            "CREDITGATE_RUN_WORKER": "true",
            "CREDITGATE_MIGRATE_ON_START": "true",
        }
        with (
            tools.process(floor_cmd) as floor,
            tools.process(ping_cmd) as ping,
            tools.process(side_cmd, env) as side,
            tools.process(side_cmd, many_env) as many,
        ):
            for target in (floor_target, ping_target):
                tools.wait_ready(target)
            tools.wait_serving(side_target)
            tools.wait_serving(many_target)
            family = processes_of(many.pid, opts.processes)
            servers = {
                "floor": (floor_target, [floor.pid], None),
                "ping": (ping_target, [ping.pid], rd.pid),
                "sidecar": (side_target, [side.pid], rd.pid),
                "sidecars": (many_target, family, rd.pid),
            }
            levels = measure_levels(servers, body, opts.runs, opts.seconds, socket_path)
            print("batch ...", file=sys.stderr)
            batch_runs = [
                loadgen.h2load(
                    side_target,
                    BATCH_PATH,
                    batch,
                    clients=4,
                    streams=4,
                    seconds=opts.seconds,
                    pids=[side.pid],
                )
                for _ in range(opts.runs)
            ]
            batch_rate = statistics.median(r.rps * 100 for r in batch_runs)
            print("1 vs many accounts ...", file=sys.stderr)
            warm_up(side_target, opts.accounts)
            costs = account_costs(side_target, [side.pid], opts.accounts, opts.runs)
            soak = run_soak(side_target, side.pid, body, opts.soak) if opts.soak else None
        print("redis-benchmark ...", file=sys.stderr)
        ceiling = redis_ceiling(rd.url, socket_path, opts.accounts, opts.runs)
    print("pgbench ...", file=sys.stderr)
    pg = postgres_baseline(find_postgres(opts.postgres), opts.runs)
    if not opts.no_envoy:
        results["envoy"] = measure_envoy(opts.runs, opts.seconds, opts.processes)
    results["worker"] = measure_worker(opts)
    results["ledger_on"] = True
    results.update(
        processes=opts.processes,
        levels=levels,
        batch=batch_rate,
        hot_cost=costs["hot"],
        spread_cost=costs["spread"],
        account_cost_ratio=costs["ratio"],
        account_cost_pairs=costs["pairs"],
        ceiling=ceiling,
        pg=pg,
        memory=memory,
        soak=soak,
        runs=opts.runs,
        seconds=opts.seconds,
        accounts=opts.accounts,
    )
    summary = report(results, Path(opts.out))
    print(json.dumps(summary))
    return 0


def measure_envoy(runs: int, seconds: float, processes: int) -> dict[str, Any]:
    """HTTP through Envoy (bench/envoy_path.py), or why it was skipped."""
    print("HTTP through Envoy ...", file=sys.stderr)
    envoy = envoy_path.measure(runs, seconds, processes)
    if "skipped" in envoy:
        print(f"envoy path skipped: {envoy['skipped']}", file=sys.stderr)
    return envoy


def measure_worker(opts: argparse.Namespace) -> dict[str, float]:
    """Ledger worker: burst drain per backend (bench/worker_drain.py), lag at peak (worker_lag)."""
    print("ledger worker: drain, then lag at peak ...", file=sys.stderr)
    drained = worker_drain.run(
        argparse.Namespace(
            events=opts.drain_events,
            accounts=100,
            batch=0,
            lanes=1,
            backend="both",
            postgres=None,
            runs=1,
        )
    )
    lag = worker_lag.measure(opts.lag_seconds, "")
    out = {
        f"worker_events_per_s_{b}": round(statistics.median(x["events_per_s"] for x in runs))
        for b in ("sqlite", "postgres")
        if isinstance(runs := drained.get(b), list)
    }
    return out | {
        "lag_at_peak_s": round(lag["lag_at_peak_s"], 3),
        "lag_peak_decisions_per_s": round(lag["peak_decisions_per_s"]),
        "lag_entries_behind_max": lag["entries_behind_max"],
        "cpu_us_per_decision_at_peak": {
            "sidecar": round(lag["sidecar_cpu_us_per_decision"]),
            "redis": round(lag["redis_cpu_us_per_decision"]),
            "worker": round(lag["worker_cpu_us_per_decision"]),
        },
    }


def run_soak(target: str, pid: int, body: bytes, seconds: int) -> dict[str, float]:
    """RSS of the sidecar every 10 s under 64 in flight for ``seconds``."""
    samples = [tools.rss_mib(pid)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        loadgen.h2load(target, PATH, body, clients=4, streams=16, seconds=9, pids=[pid])
        samples.append(tools.rss_mib(pid))
    return {
        "start_mib": samples[1],
        "end_mib": samples[-1],
        "max_mib": max(samples[1:]),
        "seconds": seconds,
    }


def report(r: dict[str, object], out: Path) -> dict[str, object]:
    """Write the markdown report and the raw measurements beside it; return the JSON summary."""
    from report import save, write  # noqa: PLC0415 - kept beside this script

    save(r, out.with_suffix(".json"))
    return write(r, out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
