"""Auto top-up payments: the consumer of the ``topup`` events the charge script writes.

The script that takes a balance to its threshold marks one top-up in flight (``tu:<pool>`` =
``run:<id>``) and appends a ``topup`` event (engine/lua/charge.lua ``crossed()``). This consumer,
in its own consumer group, pays it:

1. **Monthly maximum** (seed 000): if this month's succeeded auto top-ups plus this one would
   exceed it, nothing is charged; auto top-up pauses until the next month (``max:<ms>``).
2. **Claim**: the ledger records the top-up as a purchase ``auto:<id>``; a row already finished
   means a redelivery, which is skipped.
3. **Charge** the provider with the idempotency key ``topup:<id>``: however often this runs, the
   account is charged once.
   - Approved: Grant ``topup:<id>`` credits the pool and ends the in-flight mark (both
     idempotent), then ``credit_auto_recharge_triggered`` is sent.
   - Declined: auto top-up pauses (``failed:<id>``) until a one-time purchase succeeds, with no
     automatic retry (seed 003), and ``credit_purchase_failed`` is sent.
   - Unreachable: the batch fails and the worker retries it later with the same key.

A notification's id is derived from the top-up id, so a repeated batch sends nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from creditgate.domain import topup
from creditgate.domain.calendar import month_start, next_reset
from creditgate.domain.errors import UnavailableError
from creditgate.domain.purchase import PurchaseRecord
from creditgate.domain.wording import money
from creditgate.events.schema import EventError, decode_topup
from creditgate.ledger.store import LedgerError
from creditgate.payments.provider import Approved, Charge, Declined
from creditgate.worker.consumer import Applied

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.engine import Engine
    from creditgate.events.schema import Event, TopUp
    from creditgate.ledger.sql import SqlLedger
    from creditgate.notify import Notifications
    from creditgate.payments.provider import PaymentProvider

__all__ = ["GROUP", "TopUpConsumer", "TopUpUnreachableError"]

GROUP = "creditgate-topup"
log = logging.getLogger("creditgate.payments")


class TopUpUnreachableError(UnavailableError):
    """The provider did not answer: the batch is retried later with the same key."""


@dataclass(frozen=True, slots=True)
class _Paid:
    kind: str
    data: dict[str, object]


class TopUpConsumer:
    """Pays the top-ups the charge script starts; see the module docstring."""

    group = GROUP
    retryable: tuple[type[BaseException], ...] = (LedgerError, TopUpUnreachableError)

    def __init__(
        self,
        engine: Engine,
        provider: PaymentProvider,
        book: SqlLedger,
        notify: Notifications | None = None,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.book = book
        self.notify = notify

    async def apply(self, events: Sequence[Event]) -> Applied:
        done = skipped = 0
        for e in events:
            try:
                t = decode_topup(e)
            except EventError:
                log.exception("topup: skipping a malformed topup event")
                continue
            if t is None:
                continue
            if await self.pay(t):
                done += 1
            else:
                skipped += 1
        return Applied(done, skipped)

    async def housekeeping(self, now_ms: int) -> None:  # noqa: ARG002 - the protocol's
        return None

    async def pay(self, t: TopUp) -> bool:
        """Pay one top-up; False when it was finished before (a redelivery)."""
        e = t.event
        view = await self.engine.auto_topup(e.account, t.pool)
        unit = view.unit
        cap = view.settings.monthly_max if view.settings is not None else None
        if cap is not None:
            since = month_start(e.time_ms)
            spent = await self.book.purchased_since(e.account, topup.RECORD_PREFIX, since)
            if spent + t.amount > cap:
                until = next_reset("month", e.time_ms, 1)
                paused = await self.engine.topup_paused(
                    e.account, t.pool, t.topup_id, f"max:{until}"
                )
                log.info(
                    "topup %s of %s: this month's auto top-ups took %s of the %s maximum; "
                    "paused until the next month",
                    t.topup_id, e.account, money(spent, unit), money(cap, unit),
                )  # fmt: skip
                return paused
        wanted = PurchaseRecord(
            topup.RECORD_PREFIX + t.topup_id, e.account, t.amount, unit, "pending",
            provider=self.provider.name, created_ms=e.time_ms,
        )  # fmt: skip
        record = await self.book.claim_purchase(wanted)
        if (record.account, record.amount) != (wanted.account, wanted.amount):
            log.error(
                "topup %s: its purchase row is %s's of %s, not %s's of %s; skipped, the top-up "
                "stays in flight until an operator resolves it",
                t.topup_id, record.account, money(record.amount, unit), e.account,
                money(t.amount, unit),
            )  # fmt: skip
            return False
        if record.status != "pending":
            return False
        paid = await self._charge(t, record)
        if self.notify is not None:
            await self.notify.notify(
                e.account, paid.kind, paid.data, f"{t.topup_id}:{paid.kind}", time_ms=e.time_ms
            )
        return True

    async def _charge(self, t: TopUp, record: PurchaseRecord) -> _Paid:
        e = t.event
        charge = Charge(
            topup.idempotency_key(t.topup_id), e.account, t.amount, record.unit,
            f"creditgate auto top-up {t.topup_id}",
        )  # fmt: skip
        outcome = await self.provider.charge(charge)
        data: dict[str, object] = {
            "pool": t.pool, "amount": t.amount,
            "threshold": t.threshold, "topup_id": t.topup_id, "request_id": e.request_id,
        }  # fmt: skip
        if isinstance(outcome, Approved):
            result = await self.engine.grant(
                e.account, t.pool, t.amount, topup.grant_id(t.topup_id),
                note=f"auto top-up via {self.provider.name}: {outcome.reference}"[:256],
                ends=f"run:{t.topup_id}",
            )  # fmt: skip
            done = replace(record, status="succeeded", provider_ref=outcome.reference)
            await self.book.finish_purchase(done)
            log.info("%s: auto top-up %s paid: %s", self.provider.name, t.topup_id, charge.text())
            data |= {"balance": result.balance, "provider_ref": outcome.reference}
            return _Paid("credit_auto_recharge_triggered", data)
        if isinstance(outcome, Declined):
            failure = f"{outcome.code}: {outcome.message}"
            await self.engine.topup_paused(e.account, t.pool, t.topup_id, f"failed:{t.topup_id}")
            done = replace(record, status="failed", provider_ref=outcome.reference, failure=failure)
            await self.book.finish_purchase(done)
            log.warning(
                "%s: auto top-up %s declined (%s): %s; auto top-up is paused until a one-time "
                "purchase succeeds",
                self.provider.name, t.topup_id, failure, charge.text(),
            )  # fmt: skip
            data |= {"failure": failure, "auto_topup": "paused"}
            return _Paid("credit_purchase_failed", data)
        msg = f"auto top-up {t.topup_id}: {outcome.message} ({self.provider.name}); retrying"
        raise TopUpUnreachableError(msg)
