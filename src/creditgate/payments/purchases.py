"""One-time credit purchases (seed 003): limits, one charge, money in the balance at once.

A purchase is idempotent by its id, across retries, concurrent calls and sidecars:

1. The ledger claims the id (a ``pending`` row). A row already there answers: ``succeeded`` or
   ``failed`` with the first result; another account or amount with a clear error.
2. The provider is charged with the idempotency key ``purchase:<id>``, so however many calls
   reach it, it charges once and answers each with the same result (within one process, a
   lock per id sends only one of them).
3. Approved: the engine's Grant credits the plan's balance pool with grant id
   ``purchase:<id>`` (idempotent too), then the row becomes ``succeeded`` with the reference.
   Declined: the row becomes ``failed`` with the decline; nothing is credited. Unreachable:
   the row stays ``pending``; a retry with the same id charges with the same key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from creditgate.domain import purchase as terms
from creditgate.domain import requests as check
from creditgate.domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from creditgate.domain.purchase import PurchaseRecord
from creditgate.domain.topup import RECORD_PREFIX
from creditgate.domain.wording import money
from creditgate.payments.provider import Approved, Charge, Declined

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.purchase import PurchaseLimits
    from creditgate.engine import Engine
    from creditgate.payments.provider import PaymentProvider

__all__ = ["PurchaseBook", "PurchaseResult", "Purchases"]

log = logging.getLogger("creditgate.payments")


class PurchaseBook(Protocol):
    """Where purchases are recorded (the ledger, ``ledger.store.LedgerStore``)."""

    async def claim_purchase(self, record: PurchaseRecord) -> PurchaseRecord:
        """Insert ``record`` unless its id exists; return the row now stored under the id."""
        ...

    async def finish_purchase(self, record: PurchaseRecord) -> None:
        """Store the status, provider, reference and failure of a claimed purchase."""
        ...


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    record: PurchaseRecord
    balance: int  # the balance pool after the purchase
    pool: str
    replayed: bool  # True: the id was done before; nothing was charged now


class Purchases:
    """Runs purchases against the engine, a payment provider and the ledger."""

    def __init__(
        self,
        engine: Engine,
        provider: PaymentProvider,
        book: PurchaseBook | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.book = book
        self.clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def limits(self, account: str) -> PurchaseLimits:
        """The purchase limits of the account's plan; FAILED_PRECONDITION if it sells none."""
        state = await self.engine.balance(account)
        plan = self.engine.catalog.plan(state.plan_id)
        if plan is None or plan.purchase is None:
            msg = (
                f"plan {state.plan_id!r} of account {account!r} sells no credits: add "
                "purchase: {min, max, default} to the plan in the plans file"
            )
            raise FailedPreconditionError(msg)
        return plan.purchase

    async def purchase(self, account: str, purchase_id: str, amount: int = 0) -> PurchaseResult:
        """Charge ``amount`` (0: the plan's default) and credit it; see the module docstring."""
        check.check_id(account, "account_id")
        _check_purchase_id(purchase_id)
        if self.book is None:
            msg = "purchases are recorded in the ledger: start the server with a ledger"
            raise FailedPreconditionError(msg)
        limits = await self.limits(account)
        value = limits.amount(amount)
        lock = self._locks.setdefault(purchase_id, asyncio.Lock())
        async with lock:
            wanted = PurchaseRecord(
                purchase_id,
                account,
                value,
                limits.unit,
                "pending",
                provider=self.provider.name,
                created_ms=int(self.clock() * 1000),
            )
            stored = await self.book.claim_purchase(wanted)
            _same_purchase(stored, wanted)
            if stored.status != "pending":
                return await self._answer(stored, limits, replayed=True)
            return await self._charge(stored, limits)

    async def _charge(self, record: PurchaseRecord, limits: PurchaseLimits) -> PurchaseResult:
        assert self.book is not None  # noqa: S101 - checked by purchase()
        charge = Charge(
            terms.idempotency_key(record.purchase_id),
            record.account,
            record.amount,
            record.unit,
            f"creditgate purchase {record.purchase_id}",
        )
        outcome = await self.provider.charge(charge)
        if isinstance(outcome, Approved):
            await self.engine.grant(
                record.account,
                limits.pool,
                record.amount,
                terms.grant_id(record.purchase_id),
                note=f"purchase via {self.provider.name}: {outcome.reference}"[:256],
                ends="failed",  # a one-time purchase resumes an auto top-up a decline paused
            )
            done = replace(record, status="succeeded", provider_ref=outcome.reference)
        elif isinstance(outcome, Declined):
            failure = f"{outcome.code}: {outcome.message}"
            done = replace(record, status="failed", provider_ref=outcome.reference, failure=failure)
        else:
            log.warning(
                "%s: purchase %s of %s not confirmed (%s); retry with the same purchase_id",
                self.provider.name,
                record.purchase_id,
                charge.text(),
                outcome.message,
            )
            msg = (
                f"{outcome.message} ({self.provider.name}); the payment may or may not have "
                f"gone through: retry with the same purchase_id {record.purchase_id!r}, "
                "which cannot charge twice"
            )
            raise UnavailableError(msg)
        await self.book.finish_purchase(done)
        log.info(
            "%s: purchase %s %s: %s",
            self.provider.name,
            record.purchase_id,
            done.status,
            charge.text(),
        )
        return await self._answer(done, limits, replayed=False)

    async def _answer(
        self, record: PurchaseRecord, limits: PurchaseLimits, *, replayed: bool
    ) -> PurchaseResult:
        if record.status == "failed":
            msg = (
                f"payment for purchase {record.purchase_id!r} "
                f"({money(record.amount, record.unit)}) was declined by {record.provider}: "
                f"{record.failure}; nothing was credited. Update the payment method and "
                "purchase again with a new purchase_id"
            )
            raise FailedPreconditionError(msg)
        state = await self.engine.balance(record.account)
        balance = next((p.balance for p in state.pools if p.pool_id == limits.pool), 0)
        return PurchaseResult(record, balance, limits.pool, replayed)


def _check_purchase_id(value: str) -> None:
    check.check_id(value, "purchase_id", longest=terms.MAX_PURCHASE_ID)
    if value.startswith(RECORD_PREFIX):
        msg = f"purchase_id may not start with {RECORD_PREFIX!r}: auto top-ups are recorded so"
        raise InvalidArgumentError(msg)


def _same_purchase(stored: PurchaseRecord, wanted: PurchaseRecord) -> None:
    """The id names one purchase: another account or amount under it is a mistake."""
    if stored.account != wanted.account:
        msg = (
            f"purchase_id {wanted.purchase_id!r} was already used for another account; "
            "use a new purchase_id for each purchase"
        )
        raise InvalidArgumentError(msg)
    if stored.amount != wanted.amount:
        msg = (
            f"purchase_id {wanted.purchase_id!r} was already used for "
            f"{money(stored.amount, stored.unit)}, not {money(wanted.amount, wanted.unit)}; "
            "use a new purchase_id for a different amount"
        )
        raise InvalidArgumentError(msg)
