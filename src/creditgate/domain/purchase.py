"""One-time credit purchases (seed 003): a plan's limits and the record a purchase leaves.

Amounts are integer micro-units of the plan's balance pool unit ($1 = 1,000,000). A payment
provider takes whole cents, so an amount with a fraction of a cent is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.wording import money

__all__ = [
    "MAX_PURCHASE_ID",
    "PurchaseLimits",
    "PurchaseRecord",
    "PurchaseStatus",
    "grant_id",
    "idempotency_key",
]

CENT = 10_000  # micro-units in one cent
MAX_PURCHASE_ID = 100  # the grant id "purchase:<id>" must stay within 128 characters
PurchaseStatus = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class PurchaseLimits:
    """What one purchase may be on a plan, and which money pool it lands in."""

    pool: str
    unit: str
    minimum: int
    maximum: int
    default: int

    def amount(self, requested: int) -> int:
        """The amount to charge: ``requested`` (0: the default) if within the limits."""
        if requested < 0:
            msg = f"amount must be 0 (the plan's default) or more, got {requested}"
            raise InvalidArgumentError(msg)
        value = requested or self.default
        if value < self.minimum:
            msg = (
                f"amount {money(value, self.unit)} is below the plan's minimum purchase of "
                f"{money(self.minimum, self.unit)}"
            )
            raise InvalidArgumentError(msg)
        if value > self.maximum:
            msg = (
                f"amount {money(value, self.unit)} is above the plan's maximum purchase of "
                f"{money(self.maximum, self.unit)}"
            )
            raise InvalidArgumentError(msg)
        if value % CENT:
            msg = (
                f"amount {money(value, self.unit)} is not a whole number of cents; payments "
                f"are charged in cents (amount counts micro-units: $1 = 1,000,000)"
            )
            raise InvalidArgumentError(msg)
        return value


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """A purchase as the ledger keeps it: provider references only, never card data."""

    purchase_id: str
    account: str
    amount: int
    unit: str
    status: PurchaseStatus
    provider: str = ""
    provider_ref: str = ""
    failure: str = ""
    created_ms: int = 0


def grant_id(purchase_id: str) -> str:
    """The grant that credits a purchase: apart from an admin's own grant ids."""
    return f"purchase:{purchase_id}"


def idempotency_key(purchase_id: str) -> str:
    """The provider's idempotency key of a purchase (an auto top-up would use ``topup:<id>``)."""
    return f"purchase:{purchase_id}"
