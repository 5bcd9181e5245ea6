"""The backend-neutral ledger interface and the values its reads return.

Amounts are integer micro-units of the pool's unit. ``creditgate.ledger.open.open_ledger`` picks
the backend from the DSN: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgresql://...``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.domain.purchase import PurchaseRecord
    from creditgate.events.schema import Event

Period = Literal["day", "month"]


class LedgerError(RuntimeError):
    """The ledger database cannot be reached or refused a write; retry later."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Transaction:
    """One movement of one pool, with that pool's balance right after it."""

    cursor: str
    event_id: str
    kind: str
    pool: str
    delta: int
    balance_after: int
    lot: str | None
    request_id: str
    action: str | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Transaction, ...]
    next_cursor: str | None  # pass back to get the next (older) page; None: no more


@dataclass(frozen=True, slots=True)
class PoolTotals:
    """Lifetime figures of one pool: credits or money added, spent (net of returns), expired."""

    pool: str
    added: int
    spent: int
    expired: int


@dataclass(frozen=True, slots=True)
class Usage:
    action: str
    pool: str
    period: str  # 'YYYY-MM-DD' or 'YYYY-MM' (UTC, on the account's clock)
    amount: int  # net of refunds and released holds


@dataclass(frozen=True, slots=True)
class AccountMirror:
    """What the ledger knows of an account's Redis keys, enough to rebuild them."""

    account: str
    fields: dict[str, bytes]
    holds: dict[str, tuple[bytes, int]]  # hold id -> (packed hold, expires ms)
    records: dict[str, tuple[bytes, int | None]]  # Redis key -> (value, expires ms or None)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change: who, what (the RPC and its request as JSON), the account before/after."""

    time_ms: int
    principal: str
    role: str
    rpc: str
    account: str
    request: str
    before: str | None  # None: the call created the account
    after: str


class LedgerStore(ABC):
    """A durable ledger. Every write is idempotent on the event id."""

    @abstractmethod
    async def migrate(self) -> int:
        """Apply the pending migrations; return the schema version now in place."""

    @abstractmethod
    async def apply(self, events: Sequence[Event]) -> ApplyResult:
        """Write a batch in one transaction; events already present are skipped entirely."""

    @abstractmethod
    async def load_account(self, account: str, now_ms: int) -> AccountMirror | None:
        """The mirrored state of one account (records expiring after ``now_ms``), or None."""

    @abstractmethod
    async def accounts(self) -> list[str]:
        """Every account the ledger has seen, sorted."""

    @abstractmethod
    async def pool_balances(self, account: str) -> dict[str, int]:
        """Each pool's balance after its latest movement (payg: what the cap still allows)."""

    @abstractmethod
    async def movement_sums(self, account: str) -> dict[str, int]:
        """The sum of every movement per pool (equals the balance for non-payg pools)."""

    @abstractmethod
    async def transactions(
        self,
        account: str,
        limit: int = 50,
        cursor: str | None = None,
        pool: str | None = None,
    ) -> Page:
        """Movements that moved something, newest first, each with its pool's running balance.

        ``pool``: of that pool only.
        """

    @abstractmethod
    async def account_fields(self, account: str) -> dict[str, bytes]:
        """The mirrored fields of an account's Redis hash (plan, auto top-up...); {} if unknown."""

    @abstractmethod
    async def has_event(self, event_id: str) -> bool:
        """Whether the event ``<stream>/<entry id>`` is applied."""

    @abstractmethod
    async def applied_until(self, account: str) -> tuple[int, int]:
        """Stream time (ms) of the newest event applied: of any account, and of ``account``."""

    @abstractmethod
    async def totals(self, account: str) -> list[PoolTotals]:
        """Lifetime added, spent and expired per pool."""

    @abstractmethod
    async def usage(
        self, account: str, period: Period = "day", since_ms: int = 0, until_ms: int | None = None
    ) -> list[Usage]:
        """Net consumption grouped by action, pool and period."""

    @abstractmethod
    async def event_counts(self) -> dict[str, int]:
        """How many events of each kind the ledger holds."""

    @abstractmethod
    async def prune_records(self, before_ms: int) -> int:
        """Forget idempotency records that expired before ``before_ms``."""

    @abstractmethod
    async def write_audit(self, entry: AuditEntry) -> None:
        """Append one audit row (migration 0002)."""

    @abstractmethod
    async def audit_entries(self, account: str, limit: int = 100) -> list[AuditEntry]:
        """An account's audit rows, newest first."""

    @abstractmethod
    async def claim_purchase(self, record: PurchaseRecord) -> PurchaseRecord:
        """Insert a purchase unless its id exists; return the row under the id (migration 0003)."""

    @abstractmethod
    async def finish_purchase(self, record: PurchaseRecord) -> None:
        """Store the outcome (status, provider, reference, failure) of a claimed purchase."""

    @abstractmethod
    async def purchases(self, account: str, limit: int = 100) -> list[PurchaseRecord]:
        """An account's purchases, newest first."""

    @abstractmethod
    async def ping(self) -> None:
        """Return once the database answers a trivial query; LedgerError if it cannot."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
