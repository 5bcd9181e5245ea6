"""Versioned migrations: ``migrations/<dialect>/NNNN_name.sql``, applied in order once each.

The applied versions are rows of ``schema_version``; a backend runs each pending file and its
row in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")  # used with fullmatch
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration shipped for ``dialect`` ('sqlite' or 'postgres'), oldest first."""
    folder = files("creditgate.ledger") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        m = _NAME.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda x: x.version)
