"""The Python SDK against a real sidecar: typed answers, holds, and retries that charge once.

The retry test pauses a private redis-server (SIGSTOP) under the sidecar, so the first try
times out on the server (DEADLINE_EXCEEDED, the charge may or may not be applied); the SDK
tries again under the same request id after SIGCONT, and the account is charged exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from creditgate.client import Amount, AsyncClient, Client, HoldRefusedError
from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from creditgate.v1 import admin_pb2
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from conftest import Sidecar
    from creditgate.domain.catalog import Catalog

MICRO = 1_000_000
ROOT = Path(__file__).resolve().parents[2]
PLAIN = {"model": "light", "feature": "agents"}  # 1 credit, from bonus (daily is Light chat)


async def _bonus(engine: Engine, account: str) -> int:
    state = await engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "bonus")


async def test_check_answers_typed_amounts(sidecar: Sidecar) -> None:
    await sidecar.engine.create_account("sdk-1", "shingle_free")
    async with AsyncClient(sidecar.target) as client:
        d = await client.check("sdk-1", "shingle.api", 3)
        assert d.allowed
        assert d.reason == "allowed"
        assert d.cost == Amount(Decimal(3), "api_call")
        assert str(d.cost) == "3 api_call"
        assert d.request_id  # the SDK always sends one
        money = next(b for b in d.balances if b.pool_id == "credits")
        assert money.left is not None
        assert str(money.left) == "$0.00"  # a prepaid balance nobody has topped up
        again = await client.check("sdk-1", "shingle.api", 3, request_id=d.request_id)
        assert again.replayed


async def test_a_hold_settles_or_is_released_on_exit(sidecar: Sidecar) -> None:
    engine = sidecar.engine
    await engine.create_account("sdk-2", "agent_team")
    await engine.grant("sdk-2", "bonus", 100 * MICRO, "g")
    async with AsyncClient(sidecar.target) as client:
        async with client.reserve("sdk-2", "agent.message", 40, PLAIN) as hold:
            assert await _bonus(engine, "sdk-2") == 60 * MICRO  # held
            settled = await hold.settle(25)
        assert settled.fully_charged
        assert settled.cost == Amount(Decimal(25), "agent_credit")
        assert await _bonus(engine, "sdk-2") == 75 * MICRO  # the rest went back
        held = []

        async def fails() -> None:
            async with client.reserve("sdk-2", "agent.message", 30, PLAIN):
                held.append(await _bonus(engine, "sdk-2"))
                raise RuntimeError  # the caller fails: the hold is released on exit

        with pytest.raises(RuntimeError):
            await fails()
        assert held == [45 * MICRO]
        assert await _bonus(engine, "sdk-2") == 75 * MICRO
        with pytest.raises(HoldRefusedError) as refused:
            await client.reserve("sdk-2", "agent.message", 10**9, PLAIN).__aenter__()
        assert not refused.value.decision.allowed
        assert refused.value.decision.reason != "allowed"


async def test_the_blocking_client_does_the_same(sidecar: Sidecar) -> None:
    """Client runs the async calls on its own loop, here in a thread beside the server's."""
    await sidecar.engine.create_account("sdk-3", "shingle_free")

    def use() -> tuple[bool, str, int]:
        with Client(sidecar.target) as client:
            d = client.check("sdk-3", "shingle.api", 2, dry_run=True)
            with client.reserve("sdk-3", "shingle.api", 5) as hold:
                settled = hold.settle(4)
            return d.allowed, str(d.cost), settled.cost.micro

    assert await asyncio.to_thread(use) == (True, "2 api_call", 4 * MICRO)


@pytest.fixture
async def paused_rig(
    tmp_path: Path, demo_catalog: Catalog
) -> AsyncIterator[tuple[Engine, str, int]]:
    """A sidecar on a private redis-server that the test may SIGSTOP (0.3 s Redis timeout)."""
    private = EmbeddedRedis(tmp_path / "redis").start()
    client = AsyncRedis.from_url(private.url, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    fast = FastRedis(private.url, timeout=0.3)
    engine = Engine(client, demo_catalog, test_clock=True, fast=fast)
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    assert private.pid is not None
    try:
        yield engine, f"127.0.0.1:{port}", private.pid
    finally:
        os.kill(private.pid, signal.SIGCONT)
        await server.stop(None)
        await fast.aclose()
        await client.aclose()
        private.stop()


async def test_a_timed_out_charge_is_retried_under_its_id_and_charged_once(
    paused_rig: tuple[Engine, str, int],
) -> None:
    engine, target, redis_pid = paused_rig
    await engine.create_account("sdk-4", "agent_team")
    await engine.grant("sdk-4", "bonus", 50 * MICRO, "g")
    os.kill(redis_pid, signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    loop.call_later(0.8, os.kill, redis_pid, signal.SIGCONT)
    async with AsyncClient(target, attempt_timeout=2.0, deadline=10.0) as client:
        d = await client.check("sdk-4", "agent.message", 1, PLAIN, request_id="once")
    assert d.allowed
    assert await _bonus(engine, "sdk-4") == 49 * MICRO  # one charge, whatever the first try did


async def test_errors_that_a_retry_cannot_cure_are_raised_at_once(sidecar: Sidecar) -> None:
    async with AsyncClient(sidecar.target, deadline=30.0) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.check("nobody", "shingle.api")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_example_agent_loop_charges_what_its_llm_used(sidecar: Sidecar) -> None:
    """examples/agent_loop.py, run as a user would, against the sidecar."""
    await sidecar.engine.create_account("agent-1", "shingle_pro")
    before = await _pool(sidecar.engine, "agent-1", "tokens")
    out = await _agent_loop(sidecar, "agent-1", 4)
    total = int(out.decode().splitlines()[-1].split()[1].replace(",", ""))
    assert 4 * 500 <= total <= 4 * 2000
    assert before - await _pool(sidecar.engine, "agent-1", "tokens") == total * MICRO


async def _agent_loop(sidecar: Sidecar, account: str, turns: int) -> bytes:
    """examples/agent_loop.py run as a user would; what it printed (it must exit 0, quietly)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "agent_loop.py"),
        account,
        str(turns),
        env={**os.environ, "CREDITGATE_TARGET": sidecar.target},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    return out


async def _pool(engine: Engine, account: str, pool_id: str) -> int:
    state = await engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == pool_id)


async def test_a_request_without_an_id_is_not_retried_after_an_unknown_outcome(
    paused_rig: tuple[Engine, str, int],
) -> None:
    """A call that is not idempotent is not retried after DEADLINE_EXCEEDED.

    Advancing a test clock by 60 s may have been applied when the call timed out: a retry could
    advance it twice, so ``idempotent=False`` raises DEADLINE_EXCEEDED instead.
    """
    engine, target, redis_pid = paused_rig
    await engine.create_account("sdk-5", "agent_team")
    start = (await engine.balance("sdk-5")).now
    os.kill(redis_pid, signal.SIGSTOP)
    asyncio.get_running_loop().call_later(0.8, os.kill, redis_pid, signal.SIGCONT)
    request = admin_pb2.AdvanceTestClockRequest(account_id="sdk-5", seconds=60)
    async with AsyncClient(target, attempt_timeout=2.0, deadline=10.0) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.call(client.admin.AdvanceTestClock, request, idempotent=False)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(1.0)  # Redis is back
    moved = (await engine.balance("sdk-5")).now - start
    assert moved in (0, 60_000)  # applied once or not at all, never twice


async def test_the_example_agent_loop_on_an_unknown_account_says_so(sidecar: Sidecar) -> None:
    out = await _agent_loop(sidecar, "nobody-at-all", 2)
    assert "turn 0: NOT_FOUND: " in out.decode()
