"""The ledger worker's section of docs/BENCHMARKS.md: drain rate, lag at peak, CPU split."""

from __future__ import annotations

from typing import Any


def lines(r: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Markdown for ``r["worker"]`` (bench/worker_drain.py and bench/worker_lag.py figures)."""
    w = r.get("worker")
    if not w:
        return []
    cpu = w["cpu_us_per_decision_at_peak"]
    peak = w["lag_peak_decisions_per_s"]
    top = max(peak, summary.get("sidecars_rps", 0))

    def drain(backend: str) -> str:
        rate = w.get(f"worker_events_per_s_{backend}")
        if rate is None:
            return "not measured"
        return f"{rate:,} events/s ({rate / top:.1f}x the peak decision rate)"

    return [
        "## The ledger worker",
        "",
        "Burst drain (`bench/worker_drain.py`): 50,000 charges made beforehand through the",
        "engine on 100 accounts over 16 shards, then one `creditgate worker` (one lane) applies",
        "them to a fresh ledger: SQLite as shipped (WAL, synchronous=FULL), PostgreSQL a private",
        "cluster with fsync on. Lag at peak (`bench/worker_lag.py`): `creditgate serve` with",
        "the worker in its child process (SQLite, as `make run`) under h2load at 64 in flight",
        "for the whole run; each second, Redis time minus the time of the oldest entry the",
        "ledger's consumer group has not acknowledged (the `creditgate_ledger_lag_seconds`",
        "gauge). The peak decision rate compared against is the higher of that run's rate and",
        "the per-core row's at 64 in flight.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| worker drain, SQLite | {drain('sqlite')} |",
        f"| worker drain, PostgreSQL | {drain('postgres')} |",
        f"| decisions/s during the lag run | {peak:,} |",
        f"| lag at that rate, worst second | {w['lag_at_peak_s']:.2f} s |",
        f"| entries behind, worst second | {w['lag_entries_behind_max']:,} |",
        f"| CPU per decision: sidecar / Redis / worker | {cpu['sidecar']} / {cpu['redis']} /"
        f" {cpu['worker']} µs |",
    ]
