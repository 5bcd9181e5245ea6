"""Prometheus metrics of the ledger worker (registered once, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LAG = Gauge(
    "creditgate_ledger_lag_seconds",
    "Age of the oldest event of a shard stream not yet in the ledger (0: caught up); what a "
    "Redis crash without persistence could lose",
    ["stream"],
    multiprocess_mode="mostrecent",  # only the first server process runs the worker
)
APPLIED = Counter("creditgate_ledger_events_applied", "Events written to the ledger")
DUPLICATES = Counter(
    "creditgate_ledger_duplicates_skipped", "Redelivered events that the ledger already had"
)
INVALID = Counter("creditgate_ledger_invalid_events", "Stream entries that were not v1 events")
FAILURES = Counter("creditgate_ledger_write_failures", "Batches the ledger refused or missed")
