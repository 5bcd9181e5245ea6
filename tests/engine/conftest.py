"""Fixtures for the engine tests: an Engine on a catalog written in the test, and its events.

Every engine here runs with the test clock, so an account's time is frozen at creation and moves
only through ``advance_clock``; nothing sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import yaml

from creditgate.domain.catalog import Catalog, CatalogConfig, compile_catalog
from creditgate.engine import Engine

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis as AsyncRedis


def catalog_from(text: str) -> Catalog:
    """Compile a catalog from YAML text, as load_catalog would from a file."""
    return compile_catalog(CatalogConfig.model_validate(yaml.safe_load(text)))


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the shard stream, decoded."""

    id: str
    kind: str
    account: str
    request_id: str
    at: int
    moves: tuple[tuple[str, ...], ...]
    fields: dict[str, str]

    def net(self) -> dict[str, int]:
        """The signed amount each pool moved by in this event."""
        out: dict[str, int] = {}
        for move in self.moves:
            out[move[0]] = out.get(move[0], 0) + int(move[1])
        return out


def _decode(entry_id: bytes, raw: dict[bytes, bytes]) -> Event:
    # Some fields (a state snapshot) are binary; only the text ones are read here.
    fields = {k.decode(): v.decode(errors="backslashreplace") for k, v in raw.items()}
    moves = tuple(tuple(m.split(",")) for m in fields["m"].split(";") if m)
    return Event(
        entry_id.decode(), fields["k"], fields["a"], fields["r"], int(fields["t"]), moves, fields
    )


async def read_events(
    redis: AsyncRedis,
    engine: Engine,
    account_id: str,
    after: str = "-",
) -> list[Event]:
    """The account's events on its shard stream, oldest first, after stream id ``after``."""
    stream = engine.keys.account(account_id)[1]
    start = after if after == "-" else f"({after}"
    entries = await redis.xrange(stream, min=start, max="+")
    events = [_decode(i, raw) for i, raw in entries]
    return [e for e in events if e.account == account_id]


async def stream_mark(redis: AsyncRedis, engine: Engine, account_id: str) -> str:
    """The id of the newest entry of the account's shard stream ('0-0' when empty)."""
    last = await redis.xrevrange(engine.keys.account(account_id)[1], count=1)
    return last[0][0].decode() if last else "0-0"


@pytest.fixture
def make_engine(redis: AsyncRedis) -> Callable[..., Engine]:
    """Build an Engine (test clock on) on the per-test Redis from a catalog's YAML text."""

    def build(text: str) -> Engine:
        return Engine(redis, catalog_from(text), test_clock=True)

    return build


@pytest.fixture
def events(redis: AsyncRedis) -> Callable[..., Awaitable[list[Event]]]:
    """Read an account's events from its shard stream, optionally after a stream id."""

    async def read(engine: Engine, account_id: str, after: str = "-") -> list[Event]:
        return await read_events(redis, engine, account_id, after)

    return read


@pytest.fixture
def mark(redis: AsyncRedis) -> Callable[[Engine, str], Awaitable[str]]:
    """Note the stream position (an entry id), to read only the events after it."""

    async def at(engine: Engine, account_id: str) -> str:
        return await stream_mark(redis, engine, account_id)

    return at
