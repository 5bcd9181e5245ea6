"""The server-wide budget of calls and request bytes (transport/budget.py) on a real server.

A client holds a call open by starting it and not sending its request yet: the server has
admitted the call and is waiting to read it. That is how these tests fill the budget exactly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from creditgate.engine import Engine
from creditgate.transport import limits
from creditgate.transport.budget import Budget
from creditgate.v1 import quota_pb2
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog

PATH = "/creditgate.v1.QuotaService/CheckAndConsume"
ACCOUNT = "acme"


def _charge(request_id: str) -> bytes:
    return quota_pb2.CheckAndConsumeRequest(
        account_id=ACCOUNT, action="agent.message", quantity=1, request_id=request_id
    ).SerializeToString()


async def _charged(channel: grpc.aio.Channel, request_id: str, seconds: float = 10) -> bool:
    """Send a charge; whether it was allowed as a first-time charge (not a replay)."""
    answer = await channel.unary_unary(PATH)(_charge(request_id), timeout=seconds)
    decision = quota_pb2.Decision.FromString(answer)
    return decision.allowed and not decision.replayed


def _held(channel: grpc.aio.Channel, request_id: str) -> tuple[asyncio.Task[bytes], asyncio.Event]:
    """A charge whose request is sent only once the event is set."""
    send = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        await send.wait()
        yield _charge(request_id)

    call = channel.stream_unary(PATH)(requests(), timeout=10)
    return asyncio.ensure_future(call), send


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    msg = "the server never got there"
    raise AssertionError(msg)


@pytest_asyncio.fixture
async def served(
    redis: AsyncRedis, demo_catalog: Catalog, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Budget, grpc.aio.Channel]]:
    """A server with the budget ``request.param`` (max calls, max bytes), and a channel to it."""
    engine = Engine(redis, demo_catalog, test_clock=True)
    await engine.create_account(ACCOUNT, "agent_team")
    budget = Budget(*request.param)
    server, _health, port = await build_server(engine, "127.0.0.1:0", budget=budget)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield budget, channel
        # Every call gave back what it took.
        assert (budget.calls, budget.held, budget.reading) == (0, 0, 0)
    finally:
        await server.stop(None)


@pytest.mark.parametrize("served", [(2, 8 * limits.MAX_RECEIVE_BYTES)], indirect=True)
async def test_a_call_over_the_call_limit_is_refused_and_changes_nothing(
    served: tuple[Budget, grpc.aio.Channel],
) -> None:
    budget, channel = served
    held = [_held(channel, f"held-{i}") for i in range(2)]
    await _until(lambda: budget.calls == 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _charged(channel, "over")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == (
        "the sidecar is serving its limit of 2 calls at once (CREDITGATE_MAX_CALLS_IN_FLIGHT); "
        "nothing was done: retry after a backoff"
    )
    for call, send in held:
        send.set()
        decision = quota_pb2.Decision.FromString(await call)
        assert decision.allowed
    assert await _charged(channel, "over")  # the refused call had charged nothing


@pytest.mark.parametrize("served", [(10, limits.MAX_RECEIVE_BYTES * 3 // 2)], indirect=True)
async def test_a_read_waits_for_room_and_a_call_gone_meanwhile_gives_it_back(
    served: tuple[Budget, grpc.aio.Channel],
) -> None:
    """Room for one read: the next waits (not refused); one that times out waiting takes none."""
    budget, channel = served
    call, send = _held(channel, "first")
    await _until(lambda: budget.reading == 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _charged(channel, "impatient", seconds=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    waiting = asyncio.ensure_future(_charged(channel, "patient"))
    await _until(lambda: budget.calls == 2)  # the first and the patient one
    assert not waiting.done()
    send.set()
    assert quota_pb2.Decision.FromString(await call).allowed
    assert await waiting
    assert await _charged(channel, "impatient")  # it had waited, not charged


@pytest.mark.parametrize("served", [(10, limits.MAX_RECEIVE_BYTES)], indirect=True)
async def test_a_call_without_a_request_is_invalid(
    served: tuple[Budget, grpc.aio.Channel],
) -> None:
    _, channel = served

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.stream_unary(PATH)(nothing(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details == "the request is not a valid message: no request message was sent"


def test_the_budget_leaves_room_for_one_read() -> None:
    with pytest.raises(ValueError, match="must leave room for one read"):
        Budget(10, limits.MAX_RECEIVE_BYTES - 1)
