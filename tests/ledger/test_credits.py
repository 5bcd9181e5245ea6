"""The credits view through gRPC on both ledger backends (issue 20 §5, §7, §8).

Seed 003's Credits card (balance, low-balance badge, lifetime added and spent, auto top-up state,
the 5 most recent movements with their running balance), the history's cursor pages, usage by
action whose sums equal what was charged, and the same view after Redis is wiped and rebuilt.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.json_format import MessageToDict

from creditgate.client import AsyncClient
from creditgate.domain.topup import AutoTopUp
from creditgate.ledger.hydrate import install_hydration
from creditgate.v1 import credits_pb2 as pb
from credits_kit import USD, Env, credits_sidecar

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger

MAIL = USD // 2  # $0.50 an email from the balance
Rows = list[Any]


async def shop(env: Env, account: str = "a") -> None:
    """$20 bought; 1,500 tokens ($5 from the balance); 3 emails ($1.50); one refunded."""
    await env.engine.create_account(account, "shop")
    await env.purchases.purchase(account, f"{account}-p1", 20 * USD)
    await env.engine.consume(account, "llm", 1500, {}, f"{account}-c1")
    for i in range(3):
        await env.engine.consume(account, "mail", 1, {}, f"{account}-m{i}")
    await env.engine.refund(account, f"{account}-m1", f"{account}-r1")
    await env.sync()


async def redis_balance(env: Env, account: str, pool: str = "credits") -> int:
    state = await env.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == pool)


def chain_holds(rows: Rows) -> None:
    """Newest first: each row's balance minus its amount is the next (older) row's balance."""
    for newer, older in itertools.pairwise(rows):
        if newer.pool_id == older.pool_id:
            assert newer.balance - newer.amount == older.balance, (newer, older)


async def all_rows(env: Env, account: str, pool: str = "", limit: int = 7) -> Rows:
    rows: Rows = []
    cursor = ""
    while True:
        page = await env.call(
            "ListTransactions",
            pb.ListTransactionsRequest(
                account_id=account, pool_id=pool, limit=limit, cursor=cursor
            ),
        )
        rows += page.transactions
        assert page.has_more == bool(page.next_cursor)
        if not page.has_more:
            return rows
        cursor = page.next_cursor


async def test_credits_card(ledger: Ledger, redis: AsyncRedis, tmp_path: Path) -> None:
    """Balance, lifetime totals and the 5 recent movements agree with Redis and add up."""
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await shop(env)
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="a"))
        assert (card.pool_id, card.unit, card.plan_id) == ("credits", "usd", "shop")
        assert card.balance == await redis_balance(env, "a") == 20 * USD - 5 * USD - MAIL * 2
        assert (card.lifetime_added, card.lifetime_spent) == (20 * USD, 5 * USD + 2 * MAIL)
        assert card.balance == card.lifetime_added - card.lifetime_spent
        assert (card.low_balance, card.low_balance_threshold) == (False, 5 * USD)
        types = [(m.type, m.amount, m.balance) for m in card.recent]
        assert types == [
            ("refund", MAIL, 14 * USD),
            ("consumption", -MAIL, 27 * MAIL),
            ("consumption", -MAIL, 28 * MAIL),
            ("consumption", -MAIL, 29 * MAIL),
            ("consumption", -5 * USD, 15 * USD),
        ]
        assert card.more_history
        assert [m.action for m in card.recent] == ["mail", "mail", "mail", "mail", "llm"]
        assert card.recent[0].request_id == "a-r1"
        history = await all_rows(env, "a", "credits", limit=2)
        assert history[:5] == list(card.recent)
        assert (history[-1].type, history[-1].amount, history[-1].request_id) == (
            "purchase",
            20 * USD,
            "purchase:a-p1",
        )
        chain_holds(history)
        assert sum(m.amount for m in history) == card.balance
        assert card.auto_top_up.state == "idle"
        assert not card.auto_top_up.enabled
        assert card.ledger.ledger_unix_ms >= card.ledger.account_unix_ms > 0
        assert (card.ledger.caught_up, card.ledger.lag_ms) == (True, 0)
        # A charge the worker has not applied yet: the view says it may be behind, and by how much.
        await env.engine.consume("a", "mail", 1, {}, "not-yet")
        behind = await env.call("GetCredits", pb.GetCreditsRequest(account_id="a"))
        assert (behind.ledger.caught_up, behind.balance) == (False, card.balance)
        assert 0 <= behind.ledger.lag_ms < 60_000
        await env.sync()
        # Spent down to the $5 default threshold: the Low Balance badge.
        for i in range(17):
            await env.engine.consume("a", "mail", 1, {}, f"low-{i}")
        await env.sync()
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="a"))
        assert (card.balance, card.low_balance) == (5 * USD, True)


async def test_auto_top_up_state_and_the_view_after_a_redis_wipe(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path
) -> None:
    """au/tu reach the ledger; after FLUSHDB and hydration the view (and Redis) are the same."""
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await shop(env)
        await env.engine.set_auto_topup("a", "credits", AutoTopUp(15 * USD, 25 * USD, 100 * USD))
        await env.sync()
        card = await env.call("GetCredits", pb.GetCreditsRequest(account_id="a"))
        top = card.auto_top_up
        assert (top.enabled, top.threshold, top.amount, top.monthly_max, top.unit) == (
            True,
            15 * USD,
            25 * USD,
            100 * USD,
            "usd",
        )
        # $14 is at or below the $15 threshold: turning it on started one top-up.
        assert (top.state, card.low_balance, card.low_balance_threshold) == (
            "in_flight",
            True,
            15 * USD,
        )
        assert top.topup_id.startswith("tu_")
        assert top.topup_id in top.state_detail
        assert await env.engine.topup_paused("a", "credits", top.topup_id, f"failed:{top.topup_id}")
        await env.sync()
        before = await views(env)
        assert before["card"]["auto_top_up"]["state"] == "failed"
        assert "one-time purchase" in before["card"]["auto_top_up"]["state_detail"]
        fields = await redis.hgetall(env.engine.keys.account("a")[0])
        await redis.flushdb()
        await redis.script_flush()
        install_hydration(env.engine, ledger.store)
        assert await redis_balance(env, "a") == int(before["card"]["balance"])  # from the ledger
        assert await redis.hgetall(env.engine.keys.account("a")[0]) == fields
        await env.sync()
        assert await views(env) == before
        # The rebuilt account charges on from the same balance; the chain continues.
        await env.engine.consume("a", "mail", 1, {}, "after-wipe")
        await env.sync()
        rows = await all_rows(env, "a", "credits")
        assert (rows[0].request_id, rows[0].balance) == ("after-wipe", 14 * USD - MAIL)
        chain_holds(rows)


async def views(env: Env) -> dict[str, Any]:
    """The three answers as dicts, without the lag (which moves with the clock)."""
    out = {}
    for name, method, request in (
        ("card", "GetCredits", pb.GetCreditsRequest(account_id="a")),
        ("history", "ListTransactions", pb.ListTransactionsRequest(account_id="a", limit=100)),
        ("usage", "GetUsage", pb.GetUsageRequest(account_id="a")),
    ):
        answer = MessageToDict(await env.call(method, request), preserving_proto_field_name=True)
        answer.pop("ledger")
        out[name] = answer
    return out


@pytest.mark.parametrize("limit", [1, 7, 12, 24, 25, 26, 100])
async def test_pages_cover_the_history_once(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, limit: int
) -> None:
    """25 movements in pages of ``limit``: each once, newest first, has_more exactly right."""
    if ledger.backend == "postgres" and limit not in (1, 25, 26):
        pytest.skip("the boundaries once on PostgreSQL")
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await env.engine.create_account("a", "shop")
        for i in range(25):
            await env.engine.grant("a", "credits", (i + 1) * USD, f"g{i}")
        await env.sync()
        rows = await all_rows(env, "a", "credits", limit=limit)
        everything = await all_rows(env, "a", limit=limit)  # and the allowance's first period
        assert [(r.type, r.pool_id) for r in everything[25:]] == [("reset", "tokens")]
        assert [r.request_id for r in rows] == [f"g{i}" for i in reversed(range(25))]
        assert len({r.event_id for r in rows}) == 25
        chain_holds(rows)
        first = await env.call(
            "ListTransactions",
            pb.ListTransactionsRequest(account_id="a", pool_id="credits", limit=limit),
        )
        assert len(first.transactions) == min(limit, 25)
        assert first.has_more == (limit < 25)


async def test_usage_sums_equal_what_was_charged(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path
) -> None:
    """By action and pool, net of a refund; equal to the debits the charges answered."""
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await env.engine.create_account("a", "shop")
        await env.engine.grant("a", "credits", 50 * USD, "g1")
        charged: dict[str, int] = {}
        for i, (action, q) in enumerate([("llm", 700), ("mail", 2), ("llm", 900), ("mail", 3)]):
            d = await env.engine.consume("a", action, q, {}, f"c{i}")
            assert d.allowed
            for debit in d.debits:
                charged[debit.pool_id] = charged.get(debit.pool_id, 0) + debit.amount
        r = await env.engine.refund("a", "c3", "r1", 1)
        for back in r.returns:  # a return is a negative debit
            charged[back.pool_id] += back.amount
        await env.sync()
        usage = await env.call("GetUsage", pb.GetUsageRequest(account_id="a"))
        rows = {(u.action, u.pool_id): (u.meter, u.amount) for u in usage.actions}
        assert rows == {
            ("llm", "tokens"): ("token", 1000 * USD),
            ("llm", "credits"): ("token", 6 * USD),
            ("mail", "credits"): ("email", 4 * MAIL),
        }
        pools = {p.pool_id: p for p in usage.pools}
        assert {k: p.used for k, p in pools.items()} == charged
        state = await env.engine.balance("a")
        assert {p.pool_id: p.balance for p in state.pools} == {
            k: p.remaining for k, p in pools.items()
        }
        assert usage.until_unix_ms > usage.from_unix_ms
        days = await env.call(
            "GetUsage",
            pb.GetUsageRequest(account_id="a", from_day="2000-01-01", to_day="2000-01-31"),
        )
        assert list(days.actions) == []
        assert all(p.used == 0 for p in days.pools)


async def test_sdk(ledger: Ledger, redis: AsyncRedis, tmp_path: Path) -> None:
    """AsyncClient's credits_view, transactions and usage: the same answers as the stubs."""
    if ledger.backend == "postgres":
        pytest.skip("the SDK is backend-neutral")
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await shop(env)
        async with AsyncClient(env.target, token=env.tokens["owner"]) as client:
            card = await client.credits_view("a")
            page = await client.transactions("a", "credits", limit=2)
            nxt = await client.transactions("a", "credits", limit=2, cursor=page.next_cursor)
            usage = await client.usage("a", month="2000-01")
        stub = await env.call("GetCredits", pb.GetCreditsRequest(account_id="a"))
        assert (card.balance, list(card.recent)) == (stub.balance, list(stub.recent))
        assert [m.request_id for m in (*page.transactions, *nxt.transactions)] == [
            m.request_id for m in card.recent[:4]
        ]
        assert (usage.from_unix_ms, list(usage.actions)) == (946_684_800_000, [])
