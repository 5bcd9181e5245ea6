"""Demo accounts for `make run`: one per plan of the catalog, ready to charge."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from creditgate.domain.errors import AlreadyExistsError
from creditgate.domain.money import MICRO

if TYPE_CHECKING:
    from creditgate.engine import Engine

log = logging.getLogger("creditgate.wiring.demo")


async def provision(engine: Engine) -> list[str]:
    """Create ``demo-<plan>`` for every plan (once); grant bonus credits and $20 of balance."""
    created = []
    for plan in engine.catalog.plans.values():
        account_id = f"demo-{plan.id.replace('_', '-')}"
        try:
            await engine.create_account(account_id, plan.id)
        except AlreadyExistsError:
            continue
        created.append(account_id)
        for pool in plan.pools:
            if pool.kind == "grant":
                await engine.grant(
                    account_id, pool.id, 50 * MICRO, "demo-welcome", note="demo welcome bonus"
                )
            elif pool.kind == "balance":
                await engine.grant(
                    account_id, pool.id, 20 * MICRO, "demo-purchase", note="demo purchase"
                )
            elif pool.kind == "payg":
                await engine.set_pool_settings(account_id, pool.id, enabled=True)
    log.info("demo accounts: %s", ", ".join(created) if created else "already provisioned")
    return created
