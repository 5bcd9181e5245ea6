"""The Python SDK: ``AsyncClient`` and ``Client`` (blocking) for agent runtimes and services.

Every charge carries a request id and is retried under it on UNAVAILABLE and
DEADLINE_EXCEEDED within a deadline; answers are typed, amounts ``Decimal`` in their units.
"""

from creditgate.client.aio import AsyncClient, Hold, HoldRefusedError
from creditgate.client.channel import ClientTLS
from creditgate.client.results import Amount, Decision, Remaining, Settlement
from creditgate.client.sync import Client, SyncHold

__all__ = [
    "Amount",
    "AsyncClient",
    "Client",
    "ClientTLS",
    "Decision",
    "Hold",
    "HoldRefusedError",
    "Remaining",
    "Settlement",
    "SyncHold",
]
