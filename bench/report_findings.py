"""The summary read against the issue's targets, and where a decision's time goes in this run.

Both are sections of docs/BENCHMARKS.md that ``report.write`` places after the tables.
"""

from __future__ import annotations

from typing import Any

import report_envoy


def targets(s: dict[str, Any], envoy: dict[str, Any] | None) -> list[str]:
    """Issue 21's revised targets against this run, then the Envoy path's (issue 19), if it ran.

    Throughput is judged with one server process per core and the ledger worker on (the
    one-process figure beside it); latency as time added to the floor.
    """
    pg = s["pg_hot_tps"]
    rows: list[tuple[str, str, bool]] = []
    if "ratio_per_core_ledger_on" in s:
        per_core = s["ratio_per_core_ledger_on"]
        rows.append(
            (
                f"CheckAndConsume at 64 in flight >= 0.85x the floor, {s['processes']} processes "
                "(one per core), ledger worker on",
                f"{per_core:.2f}x (one process, ledger off: {s['ratio']:.2f}x)",
                per_core >= 0.85,
            )
        )
        added, p99 = s["unloaded_p50_added_ms"], s["sidecars_unloaded_p99_ms"]
        rows += [
            ("unloaded p50 <= the floor's + 0.15 ms", f"+{added:.2f} ms", added <= 0.15),
            ("unloaded p99 <= 1 ms", f"{p99:.2f} ms", p99 <= 1),
        ]
    if "worker_events_per_s_sqlite" in s:
        # The peak: the highest decision rate of this run, the lag run's or either sidecar row's.
        peak = max(s["lag_peak_decisions_per_s"], s["sidecar_rps"], s.get("sidecars_rps", 0))
        drain = min(s["worker_events_per_s_sqlite"], s["worker_events_per_s_postgres"] or 0)
        rows.append(
            (
                "ledger worker drains >= 2x the peak decision rate, lag < 1 s at that peak",
                f"{drain / peak:.1f}x (SQLite {s['worker_events_per_s_sqlite']:,}, PostgreSQL "
                f"{s['worker_events_per_s_postgres']:,} events/s; peak {peak:,}/s), lag "
                f"{s['lag_at_peak_s']:.2f} s at {s['lag_peak_decisions_per_s']:,}/s",
                drain >= 2 * peak and s["lag_at_peak_s"] < 1,
            )
        )
    rows += [
        (
            "batch >= 100% of the Redis ceiling",
            f"{s['batch_vs_redis_ceiling']:.0%}",
            s["batch_vs_redis_ceiling"] >= 1.0,
        ),
        (
            "100,000 accounts cost at most 1.1x one account (CPU per decision, run pair by pair)",
            f"{s['accounts_cost_ratio']:.2f}x",
            s["accounts_cost_ratio"] <= 1.1,
        ),
        (
            "above the PostgreSQL hot-account baseline, one process (issue 17)",
            f"{s['sidecar_rps']:,} vs {pg or 0:,}",
            bool(pg) and s["sidecar_rps"] > pg,
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


def analysis(s: dict[str, Any]) -> list[str]:
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
