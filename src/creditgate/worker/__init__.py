"""The worker: runs the consumers of the event stream (the ledger, the notifier), one each."""

from creditgate.worker.consumer import Applied, Consumer
from creditgate.worker.worker import Worker

__all__ = ["Applied", "Consumer", "Worker"]
