"""Event schema v1: what a stream entry holds, and how a reader decodes it.

This module owns the format. Its writers are the Lua scripts (lib.lua's ``emit``/``flush`` and
the fast path), which get ``SCHEMA_VERSION`` from ``lua_constants`` (engine/scripts.py puts it
at the top of every script); its readers are the worker's consumers (the ledger now).

Fields of an entry: ``v`` schema version, ``k`` kind (``KINDS``), ``a`` account, ``r`` request
id, ``t`` time (unix ms, the account's clock), ``m`` movements (``pool,delta,balance after[,lot]``
joined by ``;``), ``act``/``q``/``at`` the action, quantity and attributes (JSON) of a charge or
hold, ``st`` the state the call changed (msgpack: ``a`` account fields, ``h`` holds, ``r``
idempotency records with their TTL); any other field is kind-specific (``of``: the charge a
refund returns; ``n``/``pool``/``bal``/``th``: a notice, below).

A ``notice`` entry (``NOTICE``) is a threshold the script crossed, for the notifier
(``creditgate.notify``), written once per crossing before the call's own event: ``n`` the
notification kind (``NOTICE_KINDS``), ``pool`` the pool id, ``bal`` the pool's balance after the
call and ``th`` the threshold crossed, both integer micro-units of the pool's unit (``th`` is
absent for ``credit_balance_depleted``). For ``spend_cap_reached`` ``bal`` is what the cap still
allows and ``th`` the cap; for ``account_stopped`` ``bal`` is the period's spend and ``th`` the
cap below it; for ``recurring_charge_failed`` (and the ``account_stopped`` a recurring charge's
``on_short: stop`` sends with it) ``pool`` is empty, ``bal`` what the pools could not cover and
``th`` the charge, in its meter's micro-units, and ``r`` is the charge's ``rec:<id>:<due ms>``.
``r`` is the triggering request's id, ``m`` is empty: a notice moves nothing.
The notification id is derived from the event id and ``r`` (``Notice.notification_id``), so a
redelivered entry is the same notification. ``decode_notice`` reads one.

A ``topup`` entry (``TOPUP``) is an auto top-up the script started (domain/topup.py): ``r`` the
top-up id, ``pool`` the balance pool, ``amount`` to buy, ``th`` the threshold and ``bal`` the
balance that started it. The payments room's consumer charges it; ``decode_topup`` reads one.

An event id is ``<stream>/<entry id>``; it is the idempotency key of the whole ledger. Within one
account (which lives in exactly one stream) events are ordered by ``ver`` = entry ms x 10^6 +
entry sequence, and every mirrored row keeps the ``ver`` that wrote it so that a batch applied
late (a second worker, a redelivery) can never overwrite newer state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from collections.abc import Mapping

SCHEMA_VERSION = b"1"
_SEQ_LIMIT = 1_000_000
_BASE = frozenset({b"v", b"k", b"a", b"r", b"t", b"m", b"act", b"q", b"at", b"st"})
# Event kinds whose movements are consumption (or its return): they make up "spent" and usage.
USAGE_KINDS = ("charge", "hold", "settle", "release", "hold_expired", "refund")
ADD_KINDS = ("grant", "reset", "overage_block", "account")
# Every kind the scripts write; tests/events/test_schema.py holds the Lua writers to this list.
KINDS = (
    *USAGE_KINDS,  # consumption and its return
    *ADD_KINDS,  # credits added, periods reset, an account created or changed
    "expire",  # grant lots that expired
    "billing_credit",  # overage credit returned when a cap is lowered
    "stop",  # the account stopped until renewal (a cap below this period's spend)
    "resume",  # a stopped account resumed at renewal
    "clock",  # the test clock moved
    "state",  # a call that changed state (a hold's record, say) but moved nothing
    "notice",  # a threshold crossed (the notifier's input, see the module docstring)
    "topup",  # an auto top-up started (the top-up consumer's input)
)
NOTICE = "notice"
TOPUP = "topup"
# The values of a notice's ``n``; the Python side (creditgate.notify) adds NOTIFY_ONLY_KINDS.
NOTICE_KINDS = (
    "credit_balance_low",
    "credit_balance_depleted",
    "spend_cap_reached",
    "account_stopped",
    "recurring_charge_failed",
)
NOTIFY_ONLY_KINDS = ("credit_auto_recharge_triggered", "credit_purchase_failed")


def lua_constants() -> str:
    """The schema as Lua locals, for the scripts that write events."""
    return f"local EV_VERSION = '{SCHEMA_VERSION.decode()}'"


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


def parse_entry(stream: str, entry_id: bytes | str, raw: Mapping[Any, bytes]) -> Event:
    """Decode one stream entry; raises EventError for anything but a well-formed v1 event.

    The worker decodes every event: the fields it knows are read by their byte names, without
    re-keying the entry first, and ``extra`` is built only from what is left.
    """
    eid = _text(entry_id)
    f: Mapping[Any, bytes] = raw
    if raw and not isinstance(next(iter(raw)), bytes):  # str field names
        f = {k.encode() if isinstance(k, str) else k: v for k, v in raw.items()}
    if f.get(b"v") != SCHEMA_VERSION:
        msg = f"{stream}/{eid}: unsupported event version {f.get(b'v')!r}"
        raise EventError(msg)
    try:
        q, act, at, st = f.get(b"q"), f.get(b"act"), f.get(b"at"), f.get(b"st")
        return Event(
            stream=stream,
            entry_id=eid,
            ver=version_of(eid),
            account=_text(f[b"a"]),
            kind=_text(f[b"k"]),
            request_id=_text(f.get(b"r", b"")),
            time_ms=int(f[b"t"]),
            moves=_moves(_text(f.get(b"m", b""))),
            action=_text(act) if act is not None else None,
            quantity=int(q) if q else None,
            attributes=_text(at) if at else None,
            extra={_text(k): _text(v) for k, v in f.items() if k not in _BASE},
            state=decode_state(st) if st is not None else None,
        )
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        msg = f"{stream}/{eid}: malformed event ({exc})"
        raise EventError(msg) from exc


@dataclass(frozen=True, slots=True)
class Notice:
    """A decoded ``notice`` event: which threshold of which pool, the balance after."""

    event: Event
    kind: str
    pool: str
    balance: int
    threshold: int | None

    @property
    def notification_id(self) -> str:
        """Stable over redeliveries: the same entry and request give the same id."""
        raw = f"{self.event.event_id}|{self.event.request_id}".encode()
        return "ntf_" + hashlib.sha256(raw).hexdigest()[:32]


def decode_notice(e: Event) -> Notice | None:
    """The notice an event carries (None for any other kind); EventError if malformed."""
    if e.kind != NOTICE:
        return None
    x = e.extra
    try:
        n, bal, th = x["n"], int(x["bal"]), x.get("th")
        threshold = int(th) if th else None
    except (KeyError, ValueError) as exc:
        msg = f"{e.event_id}: malformed notice ({exc})"
        raise EventError(msg) from exc
    if n not in NOTICE_KINDS:
        msg = f"{e.event_id}: unknown notice kind {n!r} (known: {', '.join(NOTICE_KINDS)})"
        raise EventError(msg)
    return Notice(e, n, x.get("pool", ""), bal, threshold)


@dataclass(frozen=True, slots=True)
class TopUp:
    """A decoded ``topup`` event: the auto top-up a charge started."""

    event: Event
    topup_id: str
    pool: str
    amount: int
    threshold: int
    balance: int


def decode_topup(e: Event) -> TopUp | None:
    """The top-up an event starts (None for any other kind); EventError if malformed."""
    if e.kind != TOPUP:
        return None
    x = e.extra
    try:
        return TopUp(e, e.request_id, x["pool"], int(x["amount"]), int(x["th"]), int(x["bal"]))
    except (KeyError, ValueError) as exc:
        msg = f"{e.event_id}: malformed topup ({exc})"
        raise EventError(msg) from exc
