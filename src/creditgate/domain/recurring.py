"""Recurring charges: a plan's fee debited at the start of each of its periods.

Seed 000's "Custom Integration Base Hosting" is one, a standard recurring charge. A recurring charge
is priced as an action of the price book, so an account's terms (a price, a flag) change it as they
change any action; a price of 0 makes it free for that account. The scripts debit it
(engine/lua/recurring.lua) at the account's first call of each period, through the pools
that pay for its action, all or nothing. ``on_short`` says what happens when they cannot: ``stop``
stops the account until it is paid (any later call retries it; money added retries it at once),
``skip`` lets the period go unpaid. Both send a ``recurring_charge_failed`` notice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from creditgate.domain.errors import ConfigError
from creditgate.domain.money import MAX_AMOUNT, demand

if TYPE_CHECKING:
    from collections.abc import Iterable

    from creditgate.domain.catalog import ActionPrice, Plan, Pool
    from creditgate.domain.plans_file import ActionConfig, RecurringConfig


# The request id of a recurring charge's charge (rules.lua writes it): rec:<id>:<period start ms>.
REQUEST_PREFIX = "rec:"


@dataclass(frozen=True, slots=True)
class Recurring:
    """One recurring charge of a plan: ``quantity`` of ``action`` each ``period``."""

    id: str
    action: str
    quantity: int
    period: str  # day | month | cycle
    on_short: str  # stop | skip
    attributes: tuple[tuple[str, str], ...] = ()
    description: str = ""


def compile_recurring(
    configs: Iterable[RecurringConfig],
    book: dict[str, ActionConfig],
    actions: dict[str, ActionPrice],
    pools: Iterable[Pool],
    plan_id: str,
) -> tuple[Recurring, ...]:
    """Check a plan's ``recurring`` entries against the price book and the plan's pools.

    ``book`` is the plans file's price book, ``actions`` the plan's prices. A plan may price the
    charge at 0 (nobody pays it) and let an account flag or an account's price make it paid:
    seed 000's hosting for custom integrations only.
    """
    out: list[Recurring] = []
    pools, where = tuple(pools), f"plan {plan_id}"
    for cfg in configs:
        w = f"{where} recurring {cfg.id}"
        if any(r.id == cfg.id for r in out):
            msg = f"{where}: recurring ids must be unique ({cfg.id!r} twice)"
            raise ConfigError(msg)
        if cfg.action not in book:
            msg = f"{w}: unknown action {cfg.action!r} (declare it under actions)"
            raise ConfigError(msg)
        meter = None if book[cfg.action].free else book[cfg.action].meter
        if meter is None:
            msg = f"{w}: action {cfg.action!r} is free; a recurring charge needs a priced action"
            raise ConfigError(msg)
        attributes = dict(cfg.attributes)
        if not any(p.rate_for(cfg.action, meter, attributes) for p in pools):
            msg = f"{w}: no pool of the plan pays for action {cfg.action!r}"
            raise ConfigError(msg)
        price = actions[cfg.action].price(attributes)
        cost = 0 if price is None else demand(cfg.quantity, price.unit_cost, price.per)
        if cost is None or cost > MAX_AMOUNT:
            msg = f"{w}: {cfg.quantity} x {cfg.action} is too large"
            raise ConfigError(msg)
        out.append(
            Recurring(
                cfg.id,
                cfg.action,
                cfg.quantity,
                cfg.period,
                cfg.on_short,
                tuple(sorted(attributes.items())),
                cfg.description,
            )
        )
    return tuple(out)


def cost(plan: Plan, item: Recurring) -> int:
    """What ``item`` costs each period in its meter's micro-units, as ``plan`` prices it.

    0 when it is free (an account's terms can price it so).
    """
    price = plan.actions[item.action].price(dict(item.attributes))
    if price is None:
        return 0
    return min(demand(item.quantity, price.unit_cost, price.per) or MAX_AMOUNT, MAX_AMOUNT)


def spec(plan: Plan) -> str:
    """The plan's recurring charges as the scripts read them ('' for none).

    JSON, per charge [id, period, cost, on_short, action, quantity, attributes JSON, {pool id:
    rate}], priced by ``plan`` (with an account's terms applied).
    """
    if not plan.recurring:
        return ""
    items = []
    for item in plan.recurring:
        attributes = dict(item.attributes)
        price = plan.actions[item.action].price(attributes)
        rates: dict[str, int] = {}
        if price is not None:
            for p in plan.pools:
                rate = p.rate_for(item.action, price.meter, attributes)
                if rate is not None:
                    rates[p.id] = rate
        at = json.dumps(attributes, sort_keys=True, separators=(",", ":")) if attributes else ""
        items.append(
            [
                item.id,
                item.period,
                cost(plan, item),
                item.on_short,
                item.action,
                item.quantity,
                at,
                rates,
            ]
        )
    return json.dumps(items, separators=(",", ":"))
