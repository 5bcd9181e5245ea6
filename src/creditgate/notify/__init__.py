"""Notifications: threshold events and Python-raised ones, delivered as signed webhooks.

``consumer`` turns the stream's ``notice`` events into outbox rows (its own consumer group),
``service`` is the Python API (``notify``, endpoints, listing), ``dispatch`` posts the outbox
with retries, ``message`` is the wire format (Standard Webhooks), ``store`` the tables.
"""

from creditgate.notify.consumer import GROUP, NotifyConsumer
from creditgate.notify.dispatch import Dispatcher, DispatchSettings
from creditgate.notify.service import Notifications
from creditgate.notify.store import Endpoint, NotifyStore

__all__ = [
    "GROUP",
    "DispatchSettings",
    "Dispatcher",
    "Endpoint",
    "Notifications",
    "NotifyConsumer",
    "NotifyStore",
]
