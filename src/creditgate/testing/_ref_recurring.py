"""Reference model, recurring charges (issue 20 §6, §8): engine/lua/recurring.lua.

Each of the plan's recurring charges is due at the start of each of its periods; the account's
``fields`` keep the Lua's marks (``rc:<id>`` next due, ``rf:<id>`` the due a failure was
notified for, ``rcd`` the earliest due) and its ``events`` the notices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain.calendar import next_reset
from creditgate.domain.recurring import cost
from creditgate.domain.results import RecurringState
from creditgate.testing import _ref_notices as notices
from creditgate.testing._ref_walk import bring_up, plan_charge

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.recurring import Recurring
    from creditgate.testing._ref_state import Op

_MAX_PERIODS = 400  # periods caught up in one call, as the Lua


def _drop_marks(fields: dict[str, str], keep: set[str]) -> None:
    for name in [n for n in fields if n[:3] in ("rc:", "rf:") and n not in keep]:
        del fields[name]


def _pay(op: Op, item: Recurring, need: int, rid: str, key: Callable[[], str]) -> int:
    """Charge ``need`` through the pools that pay for the item's action: what was left over."""
    attributes = dict(item.attributes)
    price = op.plan.actions[item.action].price(attributes)
    assert price is not None  # noqa: S101 - a cost above 0 has a price
    eligible = []
    for p in op.pools:
        rate = p.config.rate_for(item.action, price.meter, attributes) if p.config else None
        if rate is not None:
            eligible.append((p, rate))
    takes, rem, capped = plan_charge(op, eligible, need)
    if rem > 0:
        notices.denied(op, eligible, capped=capped, rid=rid, key=key)
        return rem
    notices.charge(op, takes, rid, key)
    return 0


def _charge_due(op: Op, item: Recurring, due: int, need: int, key: Callable[[], str]) -> bool:
    """One charge due at ``due``, made at ``op.now``: paid, or notified once.

    False when it stops the account (unpaid, on_short stop).
    """
    fields = op.account.fields
    rid, failed_f, stop = f"rec:{item.id}:{due}", f"rf:{item.id}", item.on_short == "stop"
    short = _pay(op, item, need, rid, key) if need > 0 else 0
    if short == 0:
        fields.pop(failed_f, None)
        return True
    if fields.get(failed_f) != str(due):
        fields[failed_f] = str(due)
        row = ("", str(short), str(need))
        op.account.events.append(("notice", rid, "recurring_charge_failed", *row))
        if stop:
            op.account.events.append(("notice", rid, "account_stopped", *row))
    if stop:
        op.unpaid = item.id
    return not stop


def recurring(op: Op, key: Callable[[], str]) -> None:
    """Charge every recurring charge due, in the order of their dues, each at its due.

    The pools and holds are brought up to each due first (``bring_up``); ``op.unpaid`` names a
    charge left unpaid with ``stop``.
    """
    acct, fields = op.account, op.account.fields
    rcd = fields.get("rcd")
    items = op.plan.recurring
    if not items:
        if rcd is not None:
            _drop_marks(fields, set())
            del fields["rcd"]
        return
    if rcd is not None and int(rcd) > op.now:
        return
    op.unpaid = None
    keep = {f"{x}:{item.id}" for item in items for x in ("rc", "rf")}
    dues = [int(fields.get(f"rc:{item.id}", op.now)) for item in items]
    held = [False] * len(items)
    real = op.now
    for _ in range(_MAX_PERIODS):
        ready = [j for j in range(len(items)) if not held[j] and dues[j] <= real]
        if not ready:
            break
        k = min(ready, key=lambda j: (dues[j], j))
        item, need = items[k], cost(op.plan, items[k])
        due = dues[k]
        if need == 0:
            _charge_due(op, item, due, 0, key)
            dues[k] = next_reset(item.period, real, acct.anchor)
        else:
            # First reached: at its start; left unpaid before: now, on the pools as they are.
            if fields.get(f"rf:{item.id}") != str(due):
                op.now = due
            bring_up(op)
            if _charge_due(op, item, due, need, key):
                dues[k] = next_reset(item.period, due, acct.anchor)
            else:
                held[k] = True
        op.now = real
    for item, due in zip(items, dues, strict=True):
        fields[f"rc:{item.id}"] = str(due)
    _drop_marks(fields, keep)
    fields["rcd"] = str(min(dues))


def states(op: Op) -> tuple[RecurringState, ...]:
    """The plan's recurring charges as balance() shows them: next due, unpaid."""
    fields, out = op.account.fields, []
    for item in op.plan.recurring:
        due, failed = fields.get(f"rc:{item.id}"), fields.get(f"rf:{item.id}")
        meter = op.plan.actions[item.action].meter or ""
        unpaid = failed is not None and failed == due
        out.append(
            RecurringState(item.id, item.action, cost(op.plan, item), meter, int(due or 0), unpaid)
        )
    return tuple(out)
