"""What the SDK returns: typed answers with amounts as ``Decimal`` in their units.

The wire carries integers of micro-units beside a unit; here ``Amount(Decimal("5"),
"integration_credit")`` or ``Amount(Decimal("12.5"), "usd")``, which prints as a person reads
it (``5 integration_credit``, ``$12.50``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from creditgate.domain.money import MICRO
from creditgate.domain.wording import amount

if TYPE_CHECKING:
    from creditgate.v1 import quota_pb2

__all__ = ["Amount", "Decision", "Remaining", "Settlement"]

_UNLIMITED = -1
UNBILLED = "unavailable_allowed"  # the reason of a Decision made without Redis


@dataclass(frozen=True, slots=True)
class Amount:
    """``value`` whole units of ``unit`` (credits of a meter, or a currency such as ``usd``)."""

    value: Decimal
    unit: str

    @classmethod
    def of(cls, micro: int, unit: str) -> Amount:
        return cls(Decimal(micro) / MICRO, unit)

    @property
    def micro(self) -> int:
        return int(self.value * MICRO)

    def __str__(self) -> str:
        return amount(self.micro, self.unit)


@dataclass(frozen=True, slots=True)
class Remaining:
    """What a pool has left after the call; ``None`` when it has no limit."""

    pool_id: str
    left: Amount | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to ``check`` and ``reserve``; a denial is an answer, not an exception."""

    allowed: bool
    reason: str  # "allowed", "insufficient_credits", "spend_cap_reached", ...
    cost: Amount
    request_id: str
    balances: tuple[Remaining, ...]
    message: str
    retry_at_unix_ms: int
    replayed: bool

    @classmethod
    def of(cls, d: quota_pb2.Decision) -> Decision:
        from creditgate.v1 import quota_pb2  # noqa: PLC0415 - the enum's names

        reason = quota_pb2.Reason.Name(d.reason).removeprefix("REASON_").lower()
        return cls(
            allowed=d.allowed,
            reason=reason,
            cost=Amount.of(d.cost, d.meter),
            request_id=d.request_id,
            balances=tuple(
                Remaining(
                    b.pool_id, None if b.remaining == _UNLIMITED else Amount.of(b.remaining, b.unit)
                )
                for b in d.balances
            ),
            message=d.message,
            retry_at_unix_ms=d.retry_at_unix_ms,
            replayed=d.replayed,
        )

    @classmethod
    def unbilled(cls, request_id: str) -> Decision:
        """Allowed without the sidecar's Redis: the action's ``on_unavailable`` is ``allow``."""
        return cls(
            allowed=True,
            reason=UNBILLED,
            cost=Amount(Decimal(0), ""),
            request_id=request_id,
            balances=(),
            message="let through unbilled: the sidecar cannot reach Redis and the action's "
            "on_unavailable is allow",
            retry_at_unix_ms=0,
            replayed=False,
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling a hold charged, and whether all of it could be."""

    cost: Amount
    held: Amount
    fully_charged: bool
    message: str

    @classmethod
    def of(cls, s: quota_pb2.SettleResponse) -> Settlement:
        return cls(
            Amount.of(s.cost, s.meter), Amount.of(s.held, s.meter), s.fully_charged, s.message
        )
