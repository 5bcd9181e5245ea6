"""The payment provider interface, its outcomes, and the approving test provider.

A charge is for whole cents on the account's saved default payment method; creditgate never
sees card data and keeps only the provider's references. Every charge carries an idempotency
key: the provider answers the same key with the first result and never charges it twice, which
is what makes a retry after a timeout safe.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from creditgate.domain.purchase import CENT
from creditgate.domain.wording import money

__all__ = [
    "TEST_PROVIDER",
    "Approved",
    "Charge",
    "Declined",
    "Outcome",
    "PaymentProvider",
    "TestProvider",
    "Unreachable",
]

log = logging.getLogger("creditgate.payments")
TEST_PROVIDER = "test provider — no real money moves"


@dataclass(frozen=True, slots=True)
class Charge:
    """One payment: ``amount`` in micro-units of ``currency`` (a whole number of cents)."""

    idempotency_key: str
    account: str
    amount: int
    currency: str
    description: str = ""

    @property
    def cents(self) -> int:
        return self.amount // CENT

    def text(self) -> str:
        return f"{money(self.amount, self.currency)} for account {self.account!r}"


@dataclass(frozen=True, slots=True)
class Approved:
    reference: str  # the provider's payment id (e.g. pi_...)
    kind: Literal["approved"] = "approved"


@dataclass(frozen=True, slots=True)
class Declined:
    code: str  # the provider's decline code, e.g. card_declined, insufficient_funds
    message: str
    reference: str = ""
    kind: Literal["declined"] = "declined"


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No answer: the charge may or may not have happened; retry with the same key."""

    reason: Literal["timeout", "unavailable"]
    message: str
    kind: Literal["unreachable"] = "unreachable"


Outcome = Approved | Declined | Unreachable


class PaymentProvider(Protocol):
    """Charges an account's saved default payment method, idempotently by key."""

    @property
    def name(self) -> str:
        """How answers and log lines name the provider."""
        ...

    async def charge(self, charge: Charge) -> Outcome: ...

    async def close(self) -> None: ...


class TestProvider:
    """Approves every charge and moves no money: the embedded default.

    Its reference is derived from the idempotency key, so a retry gets the same reference.
    """

    __test__ = False  # not a pytest class

    name = TEST_PROVIDER

    async def charge(self, charge: Charge) -> Outcome:
        digest = hashlib.sha256(charge.idempotency_key.encode()).hexdigest()[:24]
        reference = f"test_{digest}"
        log.info("%s: approved %s as %s", TEST_PROVIDER, charge.text(), reference)
        return Approved(reference)

    async def close(self) -> None:
        return None
