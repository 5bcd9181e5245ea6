"""The pool rules of the reference model: lazy maintenance, the consumption walk, returns.

Written from the rules in engine/lua/lib.lua, with exact Python integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from creditgate.domain.calendar import next_reset
from creditgate.domain.money import MAX_AMOUNT, ceil_div, meter_floor, money_ceil, money_floor
from creditgate.domain.results import Movement, Reason
from creditgate.testing._ref_state import Debit, LotRec

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.testing._ref_state import Live, Op


@dataclass
class Take:
    """A planned debit: ``amount`` in the pool's unit covering ``covered`` meter micro-units."""

    pool: Live
    amount: int
    covered: int
    blocks: int
    rate: int


# --- maintenance ---------------------------------------------------------------------------


def _maintain(op: Op, p: Live) -> None:
    rec = p.rec
    if p.code == "G":
        rec.lots = [lot for lot in rec.lots if not 0 < lot.expires_at <= op.now]
        return
    if p.code not in "AOP" or p.config is None:
        return
    period, anchor = p.config.period, op.account.anchor
    if rec.next_reset is not None and op.now < rec.next_reset:
        return
    if rec.next_reset is not None:
        if p.code != "P":
            rec.balance = 0  # what is left of an ended period expires
        rec.spent = 0
        rec.debt = 0
    rec.next_reset = next_reset(period, op.now, anchor)
    if p.code == "A":
        rec.balance = p.config.amount
        p.fresh = True


def bring_up(op: Op) -> None:
    """Reset periods, drop lots, expire holds, at ``op.now``.

    Every expired hold gives its credits back (after the resets) before anything is decided.
    """
    acct = op.account
    for p in op.pools:
        _maintain(op, p)
    due = sorted((h.expires_at, rid) for rid, h in acct.holds.items() if h.expires_at <= op.now)
    for _, rid in due:
        hold = acct.holds.pop(rid)
        give_back(op, hold.debits, hold.covered)


def maintain_all(op: Op, fees: Callable[[], None] | None = None) -> None:
    """Bring the account up to date at its clock: end a stop, then ``bring_up``.

    First ``fees``: the recurring charges due, each at its due (_ref_recurring.py).
    """
    acct = op.account
    if 0 < acct.stopped_until <= op.now:
        acct.stopped_until = 0
    if fees is not None:
        fees()
    bring_up(op)


def account_block(op: Op) -> tuple[Reason, int] | None:
    """Account-level refusals, checked before any pool: the reason and when it clears."""
    if op.account.status == "suspended":
        return Reason.ACCOUNT_SUSPENDED, 0
    if op.unpaid is not None:  # until a recurring charge is paid
        return Reason.ACCOUNT_STOPPED, 0
    if op.account.stopped_until > op.now:
        return Reason.ACCOUNT_STOPPED, op.account.stopped_until
    return None


# --- the consumption walk ------------------------------------------------------------------


def _spend_cap(p: Live) -> int:
    """What an overage or pay-as-you-go pool may spend in a period: its cap, else MAX_AMOUNT."""
    return MAX_AMOUNT if p.cap < 0 else p.cap


def _money_take(op: Op, p: Live, rate: int, rem: int) -> tuple[Take | None, int, bool]:
    """A money pool pays for ``rem`` in full if it can, else for what it can afford."""
    if p.code == "B":
        avail = p.rec.balance
    elif not p.enabled or op.account.status == "trial":
        avail = 0
    else:
        avail = max(0, _spend_cap(p) - p.rec.spent)
    need = money_ceil(rem, rate)
    if avail >= need:
        return Take(p, need, rem, 0, rate), 0, False
    covered = meter_floor(avail, rate)
    take = Take(p, money_ceil(covered, rate), covered, 0, rate) if covered > 0 else None
    capped = p.code == "P" and p.enabled and op.account.status != "trial"
    return take, rem - covered, capped


def _overage_take(p: Live, rate: int, rem: int) -> tuple[Take | None, int, bool]:
    """Bought credits first; the rest in whole blocks if the spend cap allows all of them."""
    cfg = p.config
    assert cfg is not None  # noqa: S101 - only plan pools are walked
    t, blocks, capped = min(p.rec.balance, rem), 0, False
    if rem > t and p.enabled:
        n = ceil_div(rem - t, cfg.block_size)
        price = n * cfg.block_price
        if p.rec.spent + price > _spend_cap(p):
            capped = True
        else:
            blocks, t = n, rem
    return (Take(p, t, t, blocks, rate) if t > 0 else None), rem - t, capped


def plan_charge(
    op: Op,
    eligible: list[tuple[Live, int]],
    demand: int,
) -> tuple[list[Take], int, bool]:
    """How ``demand`` would be covered, changing nothing: takes, what is left, capped."""
    takes: list[Take] = []
    rem, capped = demand, False
    for p, rate in eligible:
        if rem <= 0:
            break
        take: Take | None
        if p.code in "AG":
            t = min(p.remaining(), rem)
            take, rem, hit = (Take(p, t, t, 0, rate) if t > 0 else None), rem - t, False
        elif p.code in "BP":
            take, rem, hit = _money_take(op, p, rate, rem)
        else:
            take, rem, hit = _overage_take(p, rate, rem)
        capped = capped or hit
        if take is not None:
            takes.append(take)
    return takes, rem, capped


def _take_lots(p: Live, amount: int) -> list[LotRec]:
    taken = []
    for lot in p.rec.lots:
        if amount <= 0:
            break
        t = min(amount, lot.amount)
        if t > 0:
            lot.amount -= t
            amount -= t
            taken.append(LotRec(lot.lot_id, t, lot.expires_at))
    p.rec.lots = [lot for lot in p.rec.lots if lot.amount > 0]
    return taken


def apply(takes: list[Take]) -> list[Debit]:
    """Carry out planned takes (buying overage blocks first)."""
    debits = []
    for t in takes:
        p, rec, lots = t.pool, t.pool.rec, []
        if t.blocks and p.config is not None:
            rec.balance += t.blocks * p.config.block_size
            rec.spent += t.blocks * p.config.block_price
        if p.code == "G":
            lots = _take_lots(p, t.amount)
        elif p.code == "P":
            rec.spent += t.amount
        else:
            rec.balance -= t.amount
        debits.append(
            Debit(p.pool_id, p.code, t.amount, t.covered, rec.next_reset or 0, t.rate, lots)
        )
    return debits


def dry_rows(op: Op, takes: list[Take]) -> tuple[Movement, ...]:
    """What a charge would take, with each pool's balance as it would be afterwards."""
    rows = []
    left: dict[str, int] = {}
    for t in takes:
        after = left.get(t.pool.pool_id, t.pool.remaining())
        if t.pool.code == "O" and t.pool.config is not None:
            after += t.blocks * t.pool.config.block_size - t.amount
        elif after >= 0:
            after -= t.amount
        left[t.pool.pool_id] = after
        rows.append(op.movement(t.pool.pool_id, t.amount, after, t.covered))
    return tuple(rows)


def _capacity(op: Op, p: Live, rate: int, t: int) -> int:
    """Meter micro-units ``p`` could cover at ``rate`` once every reset due by ``t`` happened."""
    rec, cfg = p.rec, p.config
    fresh = rec.next_reset is not None and rec.next_reset <= t
    if p.code == "A":
        return cfg.amount if fresh and cfg is not None else rec.balance
    if p.code in "GB":
        return p.remaining() if p.code == "G" else meter_floor(rec.balance, rate)
    return _spend_capacity(op, p, rate, fresh=fresh)


def _spend_capacity(op: Op, p: Live, rate: int, *, fresh: bool) -> int:
    """The same for an overage or pay-as-you-go pool: what its cap still allows."""
    rec, cfg = p.rec, p.config
    spent = 0 if fresh else rec.spent
    if p.code == "O":
        bought = 0 if fresh else rec.balance
        if not p.enabled:
            return bought
        if cfg is None:
            return MAX_AMOUNT
        return bought + max(0, _spend_cap(p) - spent) // cfg.block_price * cfg.block_size
    if not p.enabled or op.account.status == "trial":
        return 0
    return meter_floor(max(0, _spend_cap(p) - spent), rate)


def retry_at(op: Op, eligible: list[tuple[Live, int]], demand: int) -> int:
    """When a denial of ``demand`` ends by itself, or 0 if no reset would end it.

    That is the first reset of a pool in scope after which the pools could cover it; without
    one only a top-up or a settings change can.
    """
    times = sorted(
        p.rec.next_reset for p, _ in eligible if p.rec.next_reset is not None and p.code not in "BG"
    )
    for t in times:
        total = 0
        for p, rate in eligible:
            total += _capacity(op, p, rate, t)
            if total >= demand:
                return t
    return 0


# --- returns -------------------------------------------------------------------------------


def _return_lots(op: Op, p: Live, debit: Debit, amount: int) -> None:
    """Credits go back to the lots they came from, newest first; expired lots lose them."""
    left = amount
    for taken in reversed(debit.lots):
        if left <= 0:
            break
        back = min(left, taken.amount)
        taken.amount -= back
        left -= back
        if back == 0 or 0 < taken.expires_at <= op.now:
            continue
        lot = next((x for x in p.rec.lots if x.lot_id == taken.lot_id), None)
        if lot is not None:
            lot.amount += back
        else:
            p.rec.lots.append(LotRec(taken.lot_id, back, taken.expires_at))
            p.rec.lots.sort(key=LotRec.sort_key)


def _return_amount(debit: Debit, covered: int) -> int:
    """Money for part of a debit is rounded down; the last part returns exactly what is left."""
    if covered == debit.covered:
        return debit.amount
    if debit.code in "BP":
        return money_floor(covered, debit.rate)
    return covered


def _return_to_pool(p: Live, code: str, amount: int) -> None:
    """Money back under the cap, or credits back to the balance (paying off debt first)."""
    if code == "P":
        p.rec.spent -= amount
        return
    paid = min(p.rec.debt, amount)
    p.rec.debt -= paid
    p.rec.balance += amount - paid


def give_back(op: Op, debits: list[Debit], meter: int) -> tuple[list[Movement], int]:
    """Return ``meter`` micro-units to the pools the debits took them from, newest first.

    A return to a period that has ended, or to an expired lot, expires at once; pay-as-you-go
    money of an ended period is owed back by billing and leaves the cap alone.
    """
    rows, total = [], 0
    for d in reversed(debits):
        if meter <= 0:
            break
        if d.covered <= 0:
            continue
        c = min(meter, d.covered)
        amount = _return_amount(d, c)
        d.amount -= amount
        d.covered -= c
        meter -= c
        total += c
        p = op.pool(d.pool_id, d.code)
        if d.code == "G":
            _return_lots(op, p, d, amount)
        elif d.code == "B" or (not p.ghost and p.rec.next_reset == d.mark):
            _return_to_pool(p, d.code, amount)
        rows.append(op.movement(d.pool_id, -amount, p.remaining(), -c))
    return rows, total
