"""Seed 000's base hosting left unpaid: its notices reach the outbox, signed webhooks' source.

Through gRPC with tokens on the demo catalog: an admin flags the account custom_integration,
the free tier's 100 credits cannot pay the 500 at the renewal, every app stops; the notifier
puts ``recurring_charge_failed`` and ``account_stopped`` in the outbox once, however many calls
are refused; an upgrade pays it and the apps run again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.ledger.sql import SqlLedger
from creditgate.notify import NotifyConsumer, NotifyStore
from creditgate.v1 import admin_pb2, quota_pb2
from creditgate.worker import Worker

if TYPE_CHECKING:
    from auth_kit import Secured
    from creditgate.ledger import LedgerStore

M = 1_000_000
T0 = 4_076_827_200_000  # 2099-03-10T12:00:00Z
APR10 = 4_079_462_400_000  # 2099-04-10T00:00:00Z: the renewal of an account renewing on the 10th


async def test_unpaid_hosting_is_notified_once_and_an_upgrade_pays_it(
    shop: Secured, book: LedgerStore
) -> None:
    assert isinstance(book, SqlLedger)
    notifier = Worker(shop.engine.runner.redis, NotifyConsumer(NotifyStore(book)),
                      shop.engine.keys, block_ms=0)  # fmt: skip
    admin = shop.auth("admin")
    await shop.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="glue", plan_id="glue_free", anchor_day=10),
        metadata=admin,
    )
    await shop.engine.advance_clock("glue", to_ms=T0)
    flag = admin_pb2.SetTermsRequest(
        account_id="glue", terms=admin_pb2.Terms(flags=["custom_integration"])
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # terms are the contract: not owners'
        await shop.admin.SetTerms(flag, metadata=shop.auth("owner"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await shop.admin.SetTerms(flag, metadata=admin)

    await shop.engine.advance_clock("glue", to_ms=APR10)
    use = quota_pb2.CheckAndConsumeRequest(account_id="glue", action="glue.app_action", quantity=1)
    for _ in range(3):
        d = await shop.quota.CheckAndConsume(use, metadata=shop.auth("service"))
        assert (d.allowed, d.reason) == (False, quota_pb2.REASON_ACCOUNT_STOPPED)
    await notifier.drain()
    rows, _ = await NotifyStore(book).notifications("glue")
    sent = [(n.kind, json.loads(n.payload)["data"]) for n in reversed(rows)]
    rid = f"rec:base_hosting:{APR10}"
    assert [(k, d["request_id"], d["balance"], d["threshold"]) for k, d in sent] == [
        ("recurring_charge_failed", rid, str(400 * M), str(500 * M)),
        ("account_stopped", rid, str(400 * M), str(500 * M)),
    ]

    upgrade = admin_pb2.UpdateAccountRequest(account_id="glue", plan_id="glue_starter")
    await shop.admin.UpdateAccount(upgrade, metadata=admin)
    d = await shop.quota.CheckAndConsume(use, metadata=shop.auth("service"))
    assert d.allowed
    bal = await shop.quota.GetBalance(
        quota_pb2.GetBalanceRequest(account_id="glue"), metadata=shop.auth("owner")
    )
    assert {p.pool_id: p.balance for p in bal.pools}["base"] == 1499 * M
    assert [r.unpaid for r in bal.recurring] == [False]
