"""The audit trail: every admin change, with who made it and the account before and after.

Rows go to the ledger's ``audit`` table. Every change is also logged as one JSON line on the
``creditgate.audit`` logger, so a change is never only in Redis: with no ledger configured, or a
ledger that fails or takes longer than ``WRITE_TIMEOUT_S``, the line is logged at WARNING and
``creditgate_audit_unrecorded_total{reason}`` counts it. The admin call itself still succeeds
then: its change is already made in Redis, and an error would invite a retry of a done change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter

from creditgate.ledger.store import AuditEntry
from creditgate.transport import convert
from creditgate.transport.guard import current

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from creditgate.domain.results import AccountState
    from creditgate.ledger.store import LedgerStore

log = logging.getLogger("creditgate.audit")
WRITE_TIMEOUT_S = 2.0
UNRECORDED = Counter(
    "creditgate_audit_unrecorded",
    "Admin changes whose audit row is only in the log, not the ledger, by reason",
    ["reason"],
)


def _json(message: Message) -> str:
    return json.dumps(
        MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        ),
        sort_keys=True,
        separators=(",", ":"),
    )


def state_json(state: AccountState | None) -> str | None:
    return None if state is None else _json(convert.balance(state))


class Auditor:
    """Writes audit rows to ``store`` (None: no ledger, the log only)."""

    def __init__(self, store: LedgerStore | None = None) -> None:
        self.store = store

    async def record(
        self,
        rpc: str,
        request: Message,
        before: AccountState | None,
        after: AccountState,
    ) -> None:
        caller = current()
        entry = AuditEntry(
            time_ms=int(time.time() * 1000),
            principal=caller.name if caller else "-",
            role=caller.role if caller else "-",
            rpc=rpc,
            account=after.account_id,
            request=_json(request),
            before=state_json(before),
            after=state_json(after) or "",
        )
        reason = await self._write(entry)
        line = json.dumps({"audit": asdict(entry), "ledger": reason or "written"})
        if reason is None:
            log.info("%s", line)
        else:
            UNRECORDED.labels(reason).inc()
            log.warning("%s", line)

    async def _write(self, entry: AuditEntry) -> str | None:
        """None when the row is in the ledger, else why not."""
        if self.store is None:
            return "no_ledger"
        try:
            await asyncio.wait_for(self.store.write_audit(entry), WRITE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the change is made; log it
            log.error("audit row not written to the ledger: %s", exc)  # noqa: TRY400 - one line
            return "ledger_error"
        return None
