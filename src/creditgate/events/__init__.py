"""The event stream: its schema (``schema``), shared by the Lua writers and the Python readers."""

from creditgate.events.schema import (
    ADD_KINDS,
    KINDS,
    SCHEMA_VERSION,
    USAGE_KINDS,
    Event,
    EventError,
    Move,
    Snapshot,
    parse_entry,
)

__all__ = [
    "ADD_KINDS",
    "KINDS",
    "SCHEMA_VERSION",
    "USAGE_KINDS",
    "Event",
    "EventError",
    "Move",
    "Snapshot",
    "parse_entry",
]
