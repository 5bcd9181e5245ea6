"""The pipelined hot path (driver/pipelined.py, driver/wire.py) against a real Redis.

Same answers as the redis-py path, exact under concurrency, and it recovers from NOSCRIPT,
dropped connections and a stuck or dead server with UNAVAILABLE rather than a hang.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import TYPE_CHECKING

import pytest

from creditgate.domain.errors import UnavailableError
from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from creditgate.engine.calls import consume as consume_calls
from creditgate.testing.faults import keep_busy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from creditgate.domain.catalog import Catalog

PRO = {"model": "pro", "feature": "agents"}
LIGHT_CHAT = {"model": "light", "feature": "chat"}


@pytest.fixture
async def fast(redis_url: str, redis: Redis) -> AsyncIterator[FastRedis]:  # noqa: ARG001 - flushes the db
    """A pipelined connection to the test Redis (same database as the ``redis`` fixture)."""
    conn = FastRedis(redis_url, timeout=2.0)
    yield conn
    await conn.aclose()


def _same(d: object) -> object:
    """A decision without what differs between two accounts (ids and clocks)."""
    return dataclasses.replace(d, request_id="", now=0)  # type: ignore[type-var]


async def test_fast_and_regular_paths_answer_alike(
    redis: Redis, fast: FastRedis, demo_catalog: Catalog
) -> None:
    """The same sequence on two identical accounts gives identical decisions either way."""
    quick = Engine(redis, demo_catalog, test_clock=True, fast=fast)
    plain = Engine(redis, demo_catalog, test_clock=True)
    for engine, account in ((quick, "fast-acct"), (plain, "slow-acct")):
        await engine.create_account(account, "agent_team")
        await engine.advance_clock(account, to_ms=1_800_000_000_000)
        await engine.grant(account, "bonus", 30_000_000, "g1")
        await engine.set_pool_settings(account, "payg", enabled=True)
    steps = [(LIGHT_CHAT, 90), (LIGHT_CHAT, 20), (PRO, 700), (PRO, 400), (PRO, 1), (PRO, 10**6)]
    for i, (attrs, quantity) in enumerate(steps):
        a = await quick.consume("fast-acct", "agent.message", quantity, attrs, f"r{i}")
        b = await plain.consume("slow-acct", "agent.message", quantity, attrs, f"r{i}")
        assert _same(a) == _same(b)
    replay = await quick.consume("fast-acct", "agent.message", 20, LIGHT_CHAT, "r1")
    assert replay.replayed


async def test_small_caches_still_answer_alike(
    redis: Redis, fast: FastRedis, demo_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overflowing the bounded shape and account-key caches (here at 3) changes no answer."""
    monkeypatch.setattr(consume_calls, "_SHAPE_CACHE_SIZE", 3)
    monkeypatch.setattr(consume_calls, "_ACCOUNT_CACHE_SIZE", 3)
    quick = Engine(redis, demo_catalog, test_clock=True, fast=fast)
    plain = Engine(redis, demo_catalog, test_clock=True)
    accounts = [f"acct-{i}" for i in range(5)]
    for engine, prefix in ((quick, "f"), (plain, "s")):
        for account in accounts:
            await engine.create_account(f"{prefix}-{account}", "agent_team")
            await engine.advance_clock(f"{prefix}-{account}", to_ms=1_800_000_000_000)
            await engine.grant(f"{prefix}-{account}", "bonus", 900_000_000, "g1")
    for step in range(40):
        account = accounts[step % 5]
        attrs, quantity = (PRO, 1 + step % 7) if step % 3 else (LIGHT_CHAT, 5 + step % 4)
        a = await quick.consume(f"f-{account}", "agent.message", quantity, attrs, f"r{step}")
        b = await plain.consume(f"s-{account}", "agent.message", quantity, attrs, f"r{step}")
        assert _same(a) == _same(b)
    assert len(quick.consume_calls._shapes) <= 3
    assert len(quick.consume_calls._heads) <= 3
    assert len(quick.consume_calls._parts) <= 3


async def test_concurrent_fast_calls_allow_exactly_what_is_affordable(
    redis: Redis,
    fast: FastRedis,
    demo_catalog: Catalog,
) -> None:
    """200 concurrent pipelined charges of 3 credits (1 pro message) against 100: 33 pass."""
    engine = Engine(redis, demo_catalog, fast=fast)
    await engine.create_account("hot", "agent_free")
    await engine.consume("hot", "agent.message", 100, LIGHT_CHAT, "drain-daily")
    await engine.grant("hot", "bonus", 100_000_000, "g")
    results = await asyncio.gather(
        *(engine.consume("hot", "agent.message", 1, PRO, f"c{i}") for i in range(200))
    )
    assert sum(d.allowed for d in results) == 33
    state = await engine.balance("hot")
    bonus = next(p for p in state.pools if p.pool_id == "bonus")
    assert bonus.balance == 100_000_000 - 33 * 3_000_000


async def test_script_flush_is_recovered(
    redis: Redis, fast: FastRedis, demo_catalog: Catalog
) -> None:
    """After SCRIPT FLUSH (a Redis restart or failover) the next call reloads and succeeds."""
    engine = Engine(redis, demo_catalog, fast=fast)
    await engine.create_account("a", "zite_free")
    assert (await engine.consume("a", "zite.email.send", 1, {}, "r1")).allowed
    await redis.script_flush()
    d = await engine.consume("a", "zite.email.send", 1, {}, "r2")
    assert d.allowed
    assert d.balances[0].remaining == 990_000_000


async def test_a_killed_connection_is_replaced(
    redis: Redis, fast: FastRedis, demo_catalog: Catalog
) -> None:
    """CLIENT KILL of the pipelined connection: the next call opens a new one."""
    engine = Engine(redis, demo_catalog, fast=fast)
    await engine.create_account("a", "zite_free")
    await engine.consume("a", "zite.email.send", 1, {}, "r1")
    await engine.consume("a", "zite.email.send", 1, {}, "r2")  # now on the fast connection
    before = await redis.client_list()
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await asyncio.sleep(0)  # let the loop see the close
    for _ in range(50):
        try:
            d = await engine.consume("a", "zite.email.send", 1, {}, "r3")
            break
        except UnavailableError:
            await asyncio.sleep(0.01)
    assert d.allowed
    assert len(before) >= 1


async def test_a_stuck_redis_gives_unavailable_not_a_hang(
    redis_url: str, redis: Redis, demo_catalog: Catalog
) -> None:
    """A Redis busy in a long script: the call fails UNAVAILABLE after the timeout."""
    conn = FastRedis(redis_url, timeout=0.3)
    engine = Engine(redis, demo_catalog, fast=conn)
    try:
        await engine.create_account("a", "zite_free")
        await engine.consume("a", "zite.email.send", 1, {}, "r1")
        blocker = asyncio.create_task(keep_busy(redis, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(UnavailableError):
            await engine.consume("a", "zite.email.send", 1, {}, "r2")
        await blocker
    finally:
        await conn.aclose()


async def test_a_dead_redis_gives_unavailable(redis: Redis, demo_catalog: Catalog) -> None:
    """Nobody listening: UNAVAILABLE at once, never a hang or an unknown error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = FastRedis(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    engine = Engine(redis, demo_catalog, fast=conn)
    await engine.create_account("a", "zite_free")  # over redis-py; the plan is now known
    with pytest.raises(UnavailableError):
        await engine.consume("a", "zite.email.send", 1, {}, "r1")
    await conn.aclose()


async def test_batches_answer_alike_on_both_paths(
    redis: Redis, fast: FastRedis, demo_catalog: Catalog
) -> None:
    """A mixed batch answers item by item, the same on both paths.

    Good items, a bad one, an unknown account and an unknown action, over the pipelined
    connection and over a redis-py pipeline.
    """
    quick = Engine(redis, demo_catalog, test_clock=True, fast=fast)
    plain = Engine(redis, demo_catalog, test_clock=True)
    answers = []
    for engine, account in ((quick, "fast-acct"), (plain, "slow-acct")):
        await engine.create_account(account, "zite_free")
        await engine.advance_clock(account, to_ms=1_800_000_000_000)
        batch = [
            (account, "zite.email.send", 1, {}, "b1", False),
            (account, "zite.email.send", 0, {}, "b2", False),  # quantity 0: its own error
            ("nobody", "zite.email.send", 1, {}, "b3", False),  # unknown account
            (account, "zite.nope", 1, {}, "b4", False),  # unknown action: an answer
            (account, "zite.document.generate", 1, {}, "b5", True),  # dry run
            (account, "zite.email.send", 1, {}, "b1", False),  # replay of b1
        ]
        answers.append(await engine.consume_many(batch))
    fast_answers, plain_answers = answers
    for a, b in zip(fast_answers, plain_answers, strict=True):
        assert type(a) is type(b)
        if isinstance(a, Exception):
            assert str(a) == str(b)
        else:
            assert _same(a) == _same(b)
    kinds = [type(a).__name__ for a in fast_answers]
    assert kinds == [
        "Decision",
        "InvalidArgumentError",
        "NotFoundError",
        "Decision",
        "Decision",
        "Decision",
    ]
    assert fast_answers[5].replayed  # type: ignore[union-attr]
