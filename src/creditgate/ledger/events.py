"""Event schema v1: one stream entry decoded, and what a batch of new events writes.

An event id is ``<stream>/<entry id>``; it is the idempotency key of the whole ledger. Within one
account (which lives in exactly one stream) events are ordered by ``ver`` = entry ms x 10^6 +
entry sequence, and every mirrored row keeps the ``ver`` that wrote it so that a batch applied
late (a second worker, a redelivery) can never overwrite newer state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

SCHEMA_VERSION = b"1"
_SEQ_LIMIT = 1_000_000
_BASE = frozenset({"v", "k", "a", "r", "t", "m", "act", "q", "at", "st"})
# Event kinds whose movements are consumption (or its return): they make up "spent" and usage.
USAGE_KINDS = ("charge", "hold", "settle", "release", "hold_expired", "refund")
ADD_KINDS = ("grant", "reset", "overage_block", "account")


class EventError(ValueError):
    """A stream entry that is not a valid v1 event."""


def version_of(entry_id: str) -> int:
    """Order key of a stream entry id ``<ms>-<seq>`` (compare only within one stream)."""
    ms, _, seq = entry_id.partition("-")
    s = int(seq or 0)
    if s >= _SEQ_LIMIT:
        msg = f"entry {entry_id}: sequence beyond {_SEQ_LIMIT} in one millisecond"
        raise EventError(msg)
    return int(ms) * _SEQ_LIMIT + s


def entry_ms(ver: int) -> int:
    return ver // _SEQ_LIMIT


@dataclass(frozen=True, slots=True)
class Move:
    pool: str
    delta: int
    balance_after: int
    lot: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The ``st`` field: what the script call changed besides movements."""

    fields: dict[str, bytes | None]
    holds: dict[str, bytes | None]
    records: dict[str, tuple[bytes, int]]  # key -> (packed record, TTL ms or -1: keep expiry)


@dataclass(frozen=True, slots=True)
class Event:
    stream: str
    entry_id: str
    ver: int
    account: str
    kind: str
    request_id: str
    time_ms: int
    moves: tuple[Move, ...]
    action: str | None = None
    quantity: int | None = None
    attributes: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    state: Snapshot | None = None

    @property
    def event_id(self) -> str:
        return f"{self.stream}/{self.entry_id}"

    @property
    def origin(self) -> str:
        """The charge or hold this event's movements belong to (refunds name it in ``of``)."""
        return self.extra.get("of", self.request_id)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _moves(raw: str) -> tuple[Move, ...]:
    out = []
    for part in filter(None, raw.split(";")):
        bits = part.split(",")
        out.append(Move(bits[0], int(bits[1]), int(bits[2]), bits[3] if len(bits) > 3 else None))  # noqa: PLR2004
    return tuple(out)


def _map(obj: Any) -> dict[bytes, Any]:  # noqa: ANN401 - msgpack output
    # cmsgpack packs an empty Lua table as an empty array.
    return obj if isinstance(obj, dict) else {}


def decode_state(raw: bytes) -> Snapshot:
    st = _map(msgpack.unpackb(raw, raw=True))
    fields = {_text(k): (None if v is False else bytes(v)) for k, v in _map(st.get(b"a")).items()}
    holds = {_text(k): (None if v is False else bytes(v)) for k, v in _map(st.get(b"h")).items()}
    records = {_text(k): (bytes(v[0]), int(v[1])) for k, v in _map(st.get(b"r")).items()}
    return Snapshot(fields, holds, records)


def hold_expiry(packed: bytes) -> int:
    """The ``exp`` (ms) inside a packed hold: the score of its hold-expiry entry."""
    h = _map(msgpack.unpackb(packed, raw=True))
    return int(h.get(b"exp", 0))


def parse_entry(stream: str, entry_id: bytes | str, raw: Mapping[bytes, bytes]) -> Event:
    """Decode one stream entry; raises EventError for anything but a well-formed v1 event."""
    eid = _text(entry_id)
    f = {_text(k): v for k, v in raw.items()}
    if f.get("v") != SCHEMA_VERSION:
        msg = f"{stream}/{eid}: unsupported event version {f.get('v')!r}"
        raise EventError(msg)
    try:
        q = f.get("q")
        return Event(
            stream=stream,
            entry_id=eid,
            ver=version_of(eid),
            account=_text(f["a"]),
            kind=_text(f["k"]),
            request_id=_text(f.get("r", b"")),
            time_ms=int(f["t"]),
            moves=_moves(_text(f.get("m", b""))),
            action=_text(f["act"]) if "act" in f else None,
            quantity=int(q) if q else None,
            attributes=_text(f["at"]) if f.get("at") else None,
            extra={k: _text(v) for k, v in f.items() if k not in _BASE},
            state=decode_state(f["st"]) if "st" in f else None,
        )
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        msg = f"{stream}/{eid}: malformed event ({exc})"
        raise EventError(msg) from exc


@dataclass(slots=True)
class BatchRows:
    """Rows that the new events of one batch write; mirror rows keep only the newest version."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    movements: list[tuple[Any, ...]] = field(default_factory=list)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    accounts: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    fields: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    holds: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    records: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def event_row(e: Event) -> tuple[Any, ...]:
    moves = ";".join(
        f"{m.pool},{m.delta},{m.balance_after}" + (f",{m.lot}" if m.lot else "") for m in e.moves
    )
    return (
        e.event_id,
        e.ver,
        e.account,
        e.kind,
        e.request_id,
        e.time_ms,
        e.action,
        e.quantity,
        e.attributes,
        json.dumps(e.extra, sort_keys=True),
        moves,
    )


def _newer(table: dict[Any, tuple[Any, ...]], key: Any, row: tuple[Any, ...]) -> None:  # noqa: ANN401
    # The version is always the last column. Equal versions are moves of one event, in order:
    # the later move carries the pool's balance after the whole event.
    old = table.get(key)
    if old is None or row[-1] >= old[-1]:
        table[key] = row


def collect(events: Iterable[Event]) -> BatchRows:
    """Rows for events known to be new (not yet in the ledger)."""
    out = BatchRows()
    for e in events:
        out.events.append(event_row(e))
        for seq, m in enumerate(e.moves):
            out.movements.append(
                (
                    e.event_id,
                    seq,
                    e.ver,
                    e.account,
                    m.pool,
                    m.delta,
                    m.balance_after,
                    m.lot,
                    e.kind,
                    e.request_id,
                    e.origin,
                    e.time_ms,
                )
            )
            _newer(out.balances, (e.account, m.pool), (e.account, m.pool, m.balance_after, e.ver))
        if e.action is not None and e.kind in {"charge", "hold"}:
            out.requests.append((e.account, e.request_id, e.action, e.quantity, e.attributes))
        acc = out.accounts.get(e.account)
        first = min(acc[2], e.ver) if acc else e.ver
        out.accounts[e.account] = (e.account, e.stream, first, max(e.ver, acc[3] if acc else 0))
        if e.state is not None:
            _collect_state(out, e)
    return out


def _collect_state(out: BatchRows, e: Event) -> None:
    st = e.state
    assert st is not None  # noqa: S101 - checked by the caller
    for name, value in st.fields.items():
        _newer(out.fields, (e.account, name), (e.account, name, value, e.ver))
    for hid, packed in st.holds.items():
        exp = hold_expiry(packed) if packed is not None else None
        _newer(out.holds, (e.account, hid), (e.account, hid, packed, exp, e.ver))
    base_ms = entry_ms(e.ver)
    for key, (value, ttl) in st.records.items():
        expires = base_ms + ttl if ttl >= 0 else None
        old = out.records.get(key)
        if old is not None and expires is None:
            expires = old[3]  # KEEPTTL: the expiry set earlier in this batch
        _newer(out.records, key, (key, e.account, value, expires, e.ver))
