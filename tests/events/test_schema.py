"""The events room owns the stream's format: the Lua writers and the Python reader agree on it."""

from __future__ import annotations

import re
from importlib.resources import files

from creditgate.engine.scripts import script_source
from creditgate.events.schema import KINDS, SCHEMA_VERSION, lua_constants

LUA = files("creditgate.engine") / "lua"


def _written_kinds() -> set[str]:
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in LUA.iterdir() if p.name.endswith(".lua")
    )
    kinds = set(re.findall(r"\b(?:emit|write_event)\('([a-z_]+)'", text))
    kinds |= set(re.findall(r"EV\[\d+\] = \{'([a-z_]+)'", text))  # an event queued directly
    kinds |= set(re.findall(r"pre\[#pre \+ 1\] = \{'([a-z_]+)'", text))  # one a take queues
    return kinds


def test_every_kind_a_script_writes_is_in_the_schema_and_back() -> None:
    """No script writes a kind the schema does not name, and the schema names none unwritten."""
    written = _written_kinds()
    assert written, "no emit() found: the pattern no longer matches the Lua"
    assert written == set(KINDS)


def test_the_scripts_take_the_version_from_the_schema() -> None:
    """EV_VERSION is defined once, from SCHEMA_VERSION, at the top of every script."""
    assert lua_constants() == f"local EV_VERSION = '{SCHEMA_VERSION.decode()}'"
    for name in ("consume", "consume_batch", "grant", "account", "settle", "refund"):
        source = script_source(name)
        assert lua_constants() in source.splitlines()[:3]
        assert "'v', '1'" not in source  # no literal version left in a writer
