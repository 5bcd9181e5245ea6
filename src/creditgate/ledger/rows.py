"""What a batch of new events writes to the ledger: event rows, movements and the mirror.

Mirror rows (balances, account fields, holds, idempotency records) keep only the newest
version of each key within a batch; the store keeps only the newest across batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from creditgate.events.schema import entry_ms, hold_expiry

if TYPE_CHECKING:
    from collections.abc import Iterable

    from creditgate.events.schema import Event


@dataclass(slots=True)
class BatchRows:
    """Rows that the new events of one batch write (besides the event rows themselves)."""

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
        json.dumps(e.extra, sort_keys=True) if e.extra else "{}",
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
