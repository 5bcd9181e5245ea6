"""Prometheus metrics, served on CREDITGATE_METRICS_PORT (default 9464) at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from creditgate.domain.results import Reason

DECISIONS = Counter(
    "creditgate_decisions_total", "Quota decisions by RPC and reason", ["rpc", "reason"]
)
RPC_SECONDS = Histogram(
    "creditgate_rpc_seconds",
    "Server-side RPC latency by method and status code",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
REDIS_UP = Gauge("creditgate_redis_up", "1 when the last Redis health probe succeeded")

# Children bound once: a label lookup per call costs more than the update itself.
_DECIDED = {
    (rpc, r): DECISIONS.labels(rpc, r.name)
    for rpc in ("consume", "batch", "reserve")
    for r in Reason
}


def decided(rpc: str, reason: Reason) -> None:
    _DECIDED[rpc, reason].inc()


def decided_counter(rpc: str, reason: Reason) -> Counter:
    """The bound counter child of one RPC and reason, for a caller that counts often."""
    return _DECIDED[rpc, reason]


def latency(method: str, code: str = "OK") -> Histogram:
    """The histogram child for one method and status (cached by prometheus-client)."""
    return RPC_SECONDS.labels(method, code)
