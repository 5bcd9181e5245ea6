"""Envoy's ShouldRateLimit passes the same token guard as QuotaService (role `service`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

if TYPE_CHECKING:
    from auth_kit import Secured

MICRO = 1_000_000
OK = rls_pb2.RateLimitResponse.OK


def _ask(account: str) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="account", value=account)
    return rls_pb2.RateLimitRequest(
        domain="creditgate", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
    )


async def _account(secured: Secured, account: str) -> None:
    await secured.engine.create_account(account, "agent_free")
    await secured.engine.grant(account, "bonus", 5 * MICRO, "g")


async def _bonus(secured: Secured, account: str) -> int:
    state = await secured.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "bonus")


async def test_the_guard_gates_should_rate_limit(secured: Secured) -> None:
    """No token, a viewer, or a service limited to another account: refused, nothing charged.

    The first two are gRPC errors (UNAUTHENTICATED, PERMISSION_DENIED) as for QuotaService; the
    limited token is OVER_LIMIT, since the account is read from the descriptors.
    """
    await _account(secured, "acct-x")
    await _account(secured, "acct-y")
    stub = rls_pb2_grpc.RateLimitServiceStub(secured.channel)
    ask_y = _ask("acct-y")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ShouldRateLimit(ask_y)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ShouldRateLimit(ask_y, metadata=secured.auth("viewer"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    denied = await stub.ShouldRateLimit(ask_y, metadata=secured.auth("service-x"))
    assert json.loads(denied.raw_body)["reason"] == "PERMISSION_DENIED"
    assert await _bonus(secured, "acct-y") == 5 * MICRO
    ask_x = _ask("acct-x")
    allowed = await stub.ShouldRateLimit(ask_x, metadata=secured.auth("service-x"))
    assert allowed.overall_code == OK
    assert await _bonus(secured, "acct-x") == 4 * MICRO
    allowed = await stub.ShouldRateLimit(ask_y, metadata=secured.auth("service"))
    assert allowed.overall_code == OK
