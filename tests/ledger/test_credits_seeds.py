"""The credits view on the demo plans, as the seeds' pages describe it, through gRPC.

Seed 003 (ShingleAI): an Owner buys credits, usage past the allowance draws on them, the Credits
card shows balance, lifetime totals, the movements with their running balance, and auto top-up
once it fires and once the top-up payer paid it. Seed 001 (Zite): the usage breakdown by type
with what remains; database operations are free and never appear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.domain.topup import AutoTopUp
from creditgate.ledger.sql import SqlLedger
from creditgate.payments.provider import TestProvider
from creditgate.payments.topups import TopUpConsumer
from creditgate.v1 import admin_pb2, quota_pb2
from creditgate.v1 import credits_pb2 as pb
from creditgate.worker import Worker
from credits_kit import USD, credits_sidecar

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger
    from creditgate.domain.catalog import Catalog


async def test_seed_003_credits_card(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, demo_catalog: Catalog
) -> None:
    """Buy $10 (the default), use 100 SMS past the 500 included, then auto top-up starts."""
    async with credits_sidecar(redis, ledger.store, tmp_path, demo_catalog) as env:
        assert isinstance(ledger.store, SqlLedger)
        payer = Worker(
            redis,
            TopUpConsumer(env.engine, TestProvider(), ledger.store),
            env.engine.keys,
            block_ms=0,
        )
        await payer.setup()  # its group exists before the ledger worker's housekeeping trims
        await env.engine.create_account("shingle", "shingle_pro")
        owner = env.auth("owner")
        await env.admin.Purchase(
            admin_pb2.PurchaseRequest(account_id="shingle", purchase_id="buy-1"), metadata=owner
        )
        d = await env.quota.CheckAndConsume(
            quota_pb2.CheckAndConsumeRequest(
                account_id="shingle", action="shingle.sms", quantity=600, request_id="sms-1"
            ),
            metadata=env.auth("service"),
        )
        assert d.allowed
        await env.sync()
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="shingle"))
        assert (card.balance, card.lifetime_added, card.lifetime_spent) == (
            7 * USD,
            10 * USD,
            3 * USD,
        )
        assert [(m.type, m.amount, m.balance) for m in card.recent] == [
            ("consumption", -3 * USD, 7 * USD),
            ("purchase", 10 * USD, 10 * USD),
        ]
        assert not card.more_history
        assert (card.low_balance, card.auto_top_up.enabled) == (False, False)
        # Auto top-up at $5: the next charge that reaches it starts one top-up.
        await env.engine.set_auto_topup("shingle", "credits", AutoTopUp(5 * USD, 20 * USD))
        await env.engine.consume("shingle", "shingle.sms", 67, {}, "sms-2")  # $2.01 -> $4.99
        await env.sync()
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="shingle"))
        assert card.balance == 7 * USD - 2_010_000
        assert (card.low_balance, card.low_balance_threshold) == (True, 5 * USD)
        assert (card.auto_top_up.enabled, card.auto_top_up.state) == (True, "in_flight")
        # The top-up payer charges the (test) provider and credits the pool: an auto top-up row.
        await payer.drain()
        await env.sync()
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="shingle"))
        assert (card.balance, card.lifetime_added) == (27 * USD - 2_010_000, 30 * USD)
        assert (card.recent[0].type, card.recent[0].amount) == ("auto_top_up", 20 * USD)
        assert (card.low_balance, card.auto_top_up.state) == (False, "idle")


async def test_seed_001_usage_by_type(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, demo_catalog: Catalog
) -> None:
    """Emails 5 each, integrations 1, database free; remaining out of the 50,000 of Pro."""
    async with credits_sidecar(redis, ledger.store, tmp_path, demo_catalog) as env:
        await env.engine.create_account("zite", "zite_pro")
        for i, (action, q) in enumerate(
            [("zite.email.send", 3), ("zite.integration", 4), ("zite.db", 50), ("zite.ai.build", 2)]
        ):
            assert (await env.engine.consume("zite", action, q, {}, f"z{i}")).allowed
        await env.sync()
        usage = await env.call("GetUsage", pb.GetUsageRequest(account_id="zite"))
        assert [(u.action, u.meter, u.pool_id, u.amount) for u in usage.actions] == [
            ("zite.ai.build", "ai_credit", "ai", 2 * USD),
            ("zite.email.send", "integration_credit", "integration", 15 * USD),
            ("zite.integration", "integration_credit", "integration", 4 * USD),
        ]
        assert [(p.pool_id, p.used, p.remaining) for p in usage.pools] == [
            ("integration", 19 * USD, 49_981 * USD),
            ("ai", 2 * USD, 498 * USD),
        ]


async def test_seed_000_base_hosting_in_history_and_usage(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, demo_catalog: Catalog
) -> None:
    """The base hosting charge is a history row of its own type and a usage row of its action."""
    async with credits_sidecar(redis, ledger.store, tmp_path, demo_catalog) as env:
        from creditgate.domain.terms import Terms  # noqa: PLC0415 - this test's alone

        await env.engine.create_account(
            "glue", "glue_pro", terms=Terms(flags=("custom_integration",))
        )
        assert (await env.engine.consume("glue", "glue.app_action", 25, {}, "g1")).allowed
        await env.sync()
        page = await env.call("ListTransactions", pb.ListTransactionsRequest(account_id="glue"))
        rows = [(m.type, m.amount, m.balance, m.action) for m in page.transactions]
        assert rows[:2] == [
            ("consumption", -25 * USD, 9475 * USD, "glue.app_action"),
            ("recurring", -500 * USD, 9500 * USD, "glue.base_hosting"),
        ]
        assert page.transactions[1].request_id.startswith("rec:base_hosting:")
        usage = await env.call("GetUsage", pb.GetUsageRequest(account_id="glue"))
        assert [(u.action, u.pool_id, u.amount) for u in usage.actions] == [
            ("glue.app_action", "base", 25 * USD),
            ("glue.base_hosting", "base", 500 * USD),
        ]
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="glue", pool_id="base"))
        # An allowance's card is in its meter throughout (its auto top-up block was in usd).
        assert (card.unit, card.auto_top_up.unit, card.balance) == (
            "glue_credit",
            "glue_credit",
            9475 * USD,
        )


async def test_history_keeps_the_units_of_a_plan_left_behind(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, demo_catalog: Catalog
) -> None:
    """After a move from Zite to Integration Glue, Zite's rows still read in their credits."""
    async with credits_sidecar(redis, ledger.store, tmp_path, demo_catalog) as env:
        await env.engine.create_account("mover", "zite_free")
        assert (await env.engine.consume("mover", "zite.email.send", 2, {}, "m1")).allowed
        await env.engine.update_account("mover", plan_id="glue_free")
        await env.sync()
        page = await env.call("ListTransactions", pb.ListTransactionsRequest(account_id="mover"))
        units = {(m.pool_id, m.unit) for m in page.transactions}
        assert ("integration", "integration_credit") in units
        assert ("base", "glue_credit") in units
        assert all(unit for _, unit in units)
