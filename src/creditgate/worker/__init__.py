"""The worker: runs the consumers of the event stream (the ledger and the notifier, one Worker each)."""

from creditgate.worker.consumer import Applied, Consumer
from creditgate.worker.worker import Worker

__all__ = ["Applied", "Consumer", "Worker"]
