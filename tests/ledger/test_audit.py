"""Every admin change leaves an audit row in the ledger: who, what, before and after."""

from __future__ import annotations

import json
import logging
import socket
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

from auth_kit import secured_sidecar
from creditgate.ledger import open_ledger
from creditgate.transport.audit import Auditor
from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis
    from tests.ledger.conftest import Ledger

    from creditgate.domain.catalog import Catalog


def _pool(state: str | None, pool_id: str) -> dict[str, object]:
    assert state is not None
    return next(p for p in json.loads(state)["pools"] if p["pool_id"] == pool_id)


async def test_admin_changes_are_audited(
    ledger: Ledger, redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path
) -> None:
    """Create, update, grant, pool settings, test clock: one audit row each, reads none.

    Each row has the token's name and role, the request's fields, the account before and after.
    """
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, ledger.store):
        admin, owner = s.auth("admin"), s.auth("owner")
        await s.admin.CreateAccount(
            admin_pb2.CreateAccountRequest(account_id="acme", plan_id="agent_team"), metadata=admin
        )
        await s.admin.UpdateAccount(
            admin_pb2.UpdateAccountRequest(account_id="acme", anchor_day=5), metadata=admin
        )
        await s.admin.Grant(
            admin_pb2.GrantRequest(
                account_id="acme", pool_id="bonus", amount=7_000_000, grant_id="g", note="promo"
            ),
            metadata=owner,
        )
        await s.admin.SetPoolSettings(
            admin_pb2.SetPoolSettingsRequest(account_id="acme", pool_id="payg", enabled=True),
            metadata=admin,
        )
        await s.admin.AdvanceTestClock(
            admin_pb2.AdvanceTestClockRequest(account_id="acme", seconds=3600), metadata=admin
        )
        await s.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="acme"), metadata=admin)
    rows = list(reversed(await ledger.store.audit_entries("acme")))
    assert [r.rpc for r in rows] == [
        "AdminService/CreateAccount",
        "AdminService/UpdateAccount",
        "AdminService/Grant",
        "AdminService/SetPoolSettings",
        "AdminService/AdvanceTestClock",
    ]
    assert [(r.principal, r.role) for r in rows] == [("admin", "admin")] * 2 + [
        ("owner", "owner")
    ] + [("admin", "admin")] * 2
    create, _update, grant, settings, clock = rows
    assert create.before is None
    assert json.loads(create.after)["plan_id"] == "agent_team"
    assert json.loads(grant.request) == {
        "account_id": "acme",
        "pool_id": "bonus",
        "amount": "7000000",
        "grant_id": "g",
        "note": "promo",
        "expires_at_unix_ms": "0",
    }
    assert _pool(grant.before, "bonus")["balance"] == "0"
    assert _pool(grant.after, "bonus")["balance"] == "7000000"
    assert _pool(settings.before, "payg")["enabled"] is False
    assert _pool(settings.after, "payg")["enabled"] is True
    assert (
        int(json.loads(clock.after)["now_unix_ms"])
        - int(json.loads(clock.before or "{}")["now_unix_ms"])
        == 3_600_000
    )
    assert all(r.time_ms > 0 for r in rows)


def _unrecorded(reason: str) -> float:
    value = REGISTRY.get_sample_value("creditgate_audit_unrecorded_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize("ledger_kind", ["none", "unreachable"])
async def test_unrecorded_audit_is_logged_and_counted(
    ledger_kind: str,
    redis: AsyncRedis,
    demo_catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No ledger, or an unreachable one: the change succeeds, its row is logged and counted.

    The change is made in Redis either way; the audit row is one JSON line at WARNING and
    creditgate_audit_unrecorded_total{reason} counts it.
    """
    store = None
    if ledger_kind == "unreachable":
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        store = await open_ledger(f"postgresql://nobody@127.0.0.1:{port}/none")
    reason = "no_ledger" if store is None else "ledger_error"
    counted = _unrecorded(reason)
    caplog.set_level(logging.INFO, logger="creditgate.audit")
    try:
        async for s in secured_sidecar(redis, demo_catalog, tmp_path, store):
            answer = await s.admin.CreateAccount(
                admin_pb2.CreateAccountRequest(account_id="acme", plan_id="agent_team"),
                metadata=s.auth("admin"),
            )
            assert answer.plan_id == "agent_team"
    finally:
        if store is not None:
            await store.close()
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "creditgate.audit" and r.levelno == logging.WARNING
    ]
    assert [(x["audit"]["rpc"], x["audit"]["principal"], x["ledger"]) for x in lines] == [
        ("AdminService/CreateAccount", "admin", reason)
    ]
    assert _unrecorded(reason) == counted + 1


def test_auditor_default_has_no_ledger() -> None:
    assert Auditor().store is None
