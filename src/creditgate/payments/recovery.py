"""Money taken but not credited, found after Redis lost it, and credited once.

Redis keeps no history: lost (no persistence, a failover to a replica that was behind) it is
rebuilt from the ledger, which has every event the worker applied and nothing later. Two money
movements can fall in that gap (ledger/owed.py finds both from the ledger alone):

- **A purchase or auto top-up paid, its Grant lost.** The provider charged the customer and
  the ledger's purchase row says ``succeeded``, but the Grant that credited the balance, and its
  event, were in the lost part. Recovery grants again with the same grant id
  (``purchase:<id>``, ``topup:<id>``), the same pool and amount. Redis answers a grant id it
  still has with the first result (idempotency record), so a Grant that was not lost, only not
  yet applied by a lagging worker, is not credited twice; one that was lost is credited once.
- **A top-up started, its event lost before the payer read it.** The account says one top-up is
  in flight (``tu:<pool>`` = ``run:<id>``) and nothing will pay it, so auto top-up would never
  fire again. Recovery hands the ledger's copy of the ``topup`` event to the payer, which pays
  it as it pays any (its purchase row and the provider's idempotency key make it once).

A pass looks at what is older than ``settle_ms`` (so as not to race the worker and the payer,
which normally finish within a second) and younger than ``window_ms``; the worker runs one every
``CREDITGATE_PAYMENTS_RECOVERY_S`` (worker/periodic.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from creditgate.domain import purchase, topup
from creditgate.domain.wording import money
from creditgate.events.schema import decode_topup
from creditgate.ledger.owed import credits_owed, topup_event, topups_in_flight

if TYPE_CHECKING:
    from creditgate.domain.purchase import PurchaseRecord
    from creditgate.engine import Engine
    from creditgate.ledger.sql import SqlLedger
    from creditgate.payments.topups import TopUpConsumer

log = logging.getLogger("creditgate.payments")
RECOVERED = Counter(
    "creditgate_payments_recovered",
    "Purchases credited again, and top-ups paid, after Redis lost them",
    ["what"],
)
DAY_MS = 86_400_000


class PaymentRecovery:
    """Credits what was paid and lost, pays what was started and lost; see the docstring."""

    def __init__(
        self,
        engine: Engine,
        book: SqlLedger,
        payer: TopUpConsumer,
        *,
        settle_ms: int = 120_000,
        window_ms: int = 7 * DAY_MS,
    ) -> None:
        self.engine = engine
        self.book = book
        self.payer = payer
        self.settle_ms = settle_ms
        self.window_ms = window_ms

    async def run_pass(self, now_ms: int | None = None) -> int:
        """One pass at ``now_ms`` (default: now); returns how many it credited or paid."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        until = now - self.settle_ms
        done = 0
        for record in await credits_owed(self.book, now - self.window_ms, until):
            if await self._credit(record):
                done += 1
        for event in await topups_in_flight(self.book, until):
            t = decode_topup(event)
            if t is not None and await self.payer.pay(t):
                log.warning("auto top-up %s of %s: its event was lost; paid now", t.topup_id,
                            t.event.account)  # fmt: skip
                RECOVERED.labels("topup").inc()
                done += 1
        return done

    async def _credit(self, record: PurchaseRecord) -> bool:
        """Grant ``record`` again under its grant id; False if its pool cannot be told."""
        account, pid = record.account, record.purchase_id
        if pid.startswith(topup.RECORD_PREFIX):
            tid = pid[len(topup.RECORD_PREFIX) :]
            event = await topup_event(self.book, account, tid)
            t = decode_topup(event) if event is not None else None
            if t is None:
                log.error("auto top-up %s of %s was paid but not credited, and the ledger has no "
                          "event naming its pool: credit it by hand", tid, account)  # fmt: skip
                return False
            pool, gid, ends = t.pool, topup.grant_id(tid), f"run:{tid}"
        else:
            state = await self.engine.balance(account)
            plan = self.engine.catalog.plan(state.plan_id)
            if plan is None or plan.purchase is None:
                log.error("purchase %s of %s was paid but not credited, and its plan sells no "
                          "credits now: credit it by hand", pid, account)  # fmt: skip
                return False
            pool, gid, ends = plan.purchase.pool, purchase.grant_id(pid), "failed"
        note = f"credited again after Redis lost it ({record.provider}: {record.provider_ref})"
        result = await self.engine.grant(
            account, pool, record.amount, gid, note=note[:256], ends=ends
        )
        if not result.replayed:
            log.warning("%s of %s: paid (%s) but its credit was lost with Redis; credited now",
                        pid, account, money(record.amount, record.unit))  # fmt: skip
            RECOVERED.labels("credit").inc()
        return not result.replayed
