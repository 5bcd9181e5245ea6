"""Turns bench/run.py's measurements into docs/BENCHMARKS.md and the JSON summary."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from tools import Load


def _row(name: str, load: Load) -> str:
    return (
        f"| {name} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
        f"{load.p999_ms:.2f} | {load.cpu_us_per_request:,.0f} |"
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
        "unloaded_p50_ratio": round(at1["sidecar"].p50_ms / at1["floor"].p50_ms, 3),
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
        "Decision (`bench/floor.py`, uvloop). CPU is the server process's user+system time per",
        "request.",
        "",
        "| server, in flight | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for inflight, level in levels.items():
        lines.append(_row(f"floor, {inflight}", level["floor"]))
        lines.append(_row(f"creditgate, {inflight}", level["sidecar"]))
    lines += ["", "| in flight | creditgate / floor (req/s) |", "|---:|---:|"]
    lines += [f"| {k} | {v['ratio']:.2f} |" for k, v in levels.items()]
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


def _tps(value: float | None) -> str:
    return f"{value:,.0f} tps" if value else "not measured (no PostgreSQL)"
