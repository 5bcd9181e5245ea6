"""Background work next to the sidecar: the ledger worker and the drift check."""

from creditgate.worker.worker import GROUP, Worker

__all__ = ["GROUP", "Worker"]
