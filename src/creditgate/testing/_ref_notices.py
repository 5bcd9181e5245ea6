"""Reference model, the thresholds: notices and the auto top-up trigger (issue 20 §3-§4, §8).

Written from engine/lua/charge.lua's ``crossed()`` and ``cap_reached()``, consume_general.lua's
denial and account.lua's ``settings``, ``autotopup`` and ``topup`` operations. The account's
``fields`` hold what the Lua keeps in the account hash (``au:``, ``tu:``, ``cr:``, ``tn``); its
``events`` collect what the scripts append to the stream, as tuples:

- ``("notice", request id, kind, pool, balance, threshold or "")``;
- ``("topup", top-up id, pool, amount, threshold, balance)``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from creditgate.testing._ref_walk import apply

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.testing._ref_state import Debit, Live, Op
    from creditgate.testing._ref_walk import Take

Event = tuple[str, ...]


def crossed(  # noqa: PLR0913, PLR0917 - mirrors charge.lua's crossed()
    op: Op,
    p: Live,
    before: int,
    after: int,
    rid: str,
    key: Callable[[], str],
    *,
    denied: bool = False,
) -> None:
    """What a balance pool's take from ``before`` to ``after`` crosses (see the Lua)."""
    acct, pid = op.account, p.pool_id
    au = acct.fields.get(f"au:{pid}")
    th = p.config.low_balance if p.config is not None else 0
    amount = ""
    if au:
        parts = au.split(",")
        th, amount = int(parts[0]), parts[1]
    if not denied:
        if th > 0 and before > th >= after:
            acct.events.append(("notice", rid, "credit_balance_low", pid, str(after), str(th)))
        if before > 0 and after == 0:
            acct.events.append(("notice", rid, "credit_balance_depleted", pid, "0", ""))
    if au and (after <= th or denied):
        tu = acct.fields.get(f"tu:{pid}")
        if tu is None or (tu.startswith("max:") and op.now >= int(tu[4:])):
            n = int(acct.fields.get("tn", "0")) + 1
            digest = hashlib.sha1(f"{key()}|{n}".encode()).hexdigest()[:16]  # noqa: S324 - an id
            tid = f"tu_{op.now}_{digest}"
            acct.fields["tn"] = str(n)
            acct.fields[f"tu:{pid}"] = f"run:{tid}"
            acct.events.append(("topup", tid, pid, amount, str(th), str(after)))


def cap_reached(op: Op, p: Live, spent: int, rid: str, *, denied: bool = False) -> None:
    """Whether an overage or pay-as-you-go pool reached its cap, first time this period."""
    cap, pid = p.cap, p.pool_id
    room = cap - spent
    block = p.config.block_price if p.code == "O" and p.config is not None else 1
    if cap < 0 or (not denied and room >= block):
        return
    mark = str(p.rec.next_reset or 0)
    if op.account.fields.get(f"cr:{pid}") == mark:
        return
    op.account.fields[f"cr:{pid}"] = mark
    op.account.events.append(("notice", rid, "spend_cap_reached", pid, str(max(0, room)), str(cap)))


def charge(op: Op, takes: list[Take], rid: str, key: Callable[[], str]) -> list[Debit]:
    """``apply`` the takes, then what each crossed, in the walk's order."""
    before = [(t, t.pool.rec.balance) for t in takes]
    debits = apply(takes)
    for t, was in before:
        p = t.pool
        if p.code == "B":
            crossed(op, p, was, p.rec.balance, rid, key)
        elif p.code == "P" or t.blocks > 0:
            cap_reached(op, p, p.rec.spent, rid)
    return debits


def denied(
    op: Op, eligible: list[tuple[Live, int]], *, capped: bool, rid: str, key: Callable[[], str]
) -> None:
    """A refused charge starts an auto top-up and marks the caps that stopped it."""
    for p, _ in eligible:
        if p.code == "B":
            crossed(op, p, p.rec.balance, p.rec.balance, rid, key, denied=True)
        elif capped and p.enabled and p.rec.next_reset and p.code in "OP":
            cap_reached(op, p, p.rec.spent, rid, denied=True)


def account_stopped(op: Op, p: Live) -> None:
    op.account.events.append(
        ("notice", "", "account_stopped", p.pool_id, str(p.rec.spent), str(p.cap))
    )
