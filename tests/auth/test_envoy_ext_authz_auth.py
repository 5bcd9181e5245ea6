"""Envoy's ext_authz Check passes the same token guard as QuotaService (role `service`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

if TYPE_CHECKING:
    from auth_kit import Secured

MICRO = 1_000_000
Ctx = attribute_context_pb2.AttributeContext


def _ask(account: str) -> external_auth_pb2.CheckRequest:
    http = Ctx.HttpRequest(method="GET", path="/", headers={"x-account-id": account})
    return external_auth_pb2.CheckRequest(attributes=Ctx(request=Ctx.Request(http=http)))


async def _account(secured: Secured, account: str) -> None:
    await secured.engine.create_account(account, "agent_free")
    await secured.engine.grant(account, "bonus", 5 * MICRO, "g")


async def _bonus(secured: Secured, account: str) -> int:
    state = await secured.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "bonus")


async def test_the_guard_gates_check(secured: Secured) -> None:
    """No token, a viewer: gRPC errors; a service limited to another account: 403; nothing taken."""
    await _account(secured, "acct-x")
    await _account(secured, "acct-y")
    stub = external_auth_pb2_grpc.AuthorizationStub(secured.channel)
    ask_y = _ask("acct-y")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(ask_y)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(ask_y, metadata=secured.auth("viewer"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    denied = await stub.Check(ask_y, metadata=secured.auth("service-x"))
    assert denied.denied_response.status.code == 403
    assert json.loads(denied.denied_response.body)["reason"] == "PERMISSION_DENIED"
    assert await _bonus(secured, "acct-y") == 5 * MICRO
    allowed = await stub.Check(_ask("acct-x"), metadata=secured.auth("service-x"))
    assert allowed.HasField("ok_response")
    assert await _bonus(secured, "acct-x") == 4 * MICRO
    allowed = await stub.Check(ask_y, metadata=secured.auth("service"))
    assert allowed.HasField("ok_response")
    assert await _bonus(secured, "acct-y") == 4 * MICRO
