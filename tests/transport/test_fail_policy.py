"""Redis down: each action's ``on_unavailable`` decides, for gateways and for the SDK.

The demo catalog with ``agent.message`` set to ``allow`` (``shingle.llm`` keeps the default,
``deny``), served on a private Redis that is then stopped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import REGISTRY

from creditgate.client import AsyncClient
from creditgate.domain.catalog import load_catalog
from creditgate.domain.errors import ON_UNAVAILABLE_KEY
from creditgate.transport import fail_policy
from creditgate.v1 import quota_pb2, quota_pb2_grpc
from envoy_kit import demo_allowing, without_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ACCOUNT = "fp-acct"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest_asyncio.fixture
async def target(tmp_path: Path) -> AsyncIterator[str]:
    """A sidecar whose Redis has just been stopped (the account exists)."""
    async with without_redis(tmp_path, demo_allowing("agent.message"), ACCOUNT) as target:
        yield target


def _without_redis(rpc: str, action: str, policy: str) -> float:
    labels = {"rpc": rpc, "action": action, "policy": policy}
    return REGISTRY.get_sample_value("creditgate_decisions_without_redis_total", labels) or 0.0


def _rls(action: str, **more: str) -> Any:  # noqa: ANN401 - a RateLimitRequest
    entries = {"account": ACCOUNT, "action": action, "request_id": uuid.uuid4().hex, **more}
    return rls_pb2.RateLimitRequest(
        domain="creditgate",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v)
                    for k, v in entries.items()
                ]
            )
        ],
    )


async def test_rate_limit_lets_an_allow_action_through_and_refuses_a_deny_one(
    target: str,
) -> None:
    allowed = _without_redis("ratelimit", "agent.message", "allow")
    denied = _without_redis("ratelimit", "shingle.llm", "deny")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        answer = await stub.ShouldRateLimit(_rls("agent.message"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ShouldRateLimit(_rls("shingle.llm"))
    assert answer.overall_code == rls_pb2.RateLimitResponse.OK
    headers = {h.key: h.value for h in answer.response_headers_to_add}
    assert headers["x-creditgate-reason"] == "UNAVAILABLE_ALLOWED"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the filter's failure mode decides
    assert _without_redis("ratelimit", "agent.message", "allow") == allowed + 1
    assert _without_redis("ratelimit", "shingle.llm", "deny") == denied + 1


async def test_a_stream_done_is_never_let_through(target: str) -> None:
    """A settle needs Redis whatever the policy: the hold expires and its credits go back."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        request = _rls("agent.message", phase="settle", usage="3")
        request.descriptors[0].entries.add(
            key="held", value=request.descriptors[0].entries[2].value
        )
        request.domain = "llm"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ShouldRateLimit(request)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_ext_authz_allows_unbilled_and_tells_the_upstream(target: str) -> None:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST",
        path="/v1/chat",
        headers={"x-account-id": ACCOUNT, "x-request-id": "fp-1", "x-creditgate-remaining": "9"},
    )
    request = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(request)
    assert answer.WhichOneof("http_response") == "ok_response"
    upstream = {o.header.key: o.header.value for o in answer.ok_response.headers}
    assert upstream == {
        "x-creditgate-request-id": "fp-1",
        "x-creditgate-reason": "UNAVAILABLE_ALLOWED",
    }
    assert list(answer.ok_response.headers_to_remove) == ["x-creditgate-remaining"]
    assert all(
        o.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        for o in answer.ok_response.headers
    )


async def test_check_and_consume_stays_unavailable_and_names_the_policy(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        for action, policy in (("agent.message", "allow"), ("shingle.llm", "deny")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CheckAndConsume(
                    quota_pb2.CheckAndConsumeRequest(
                        account_id=ACCOUNT, action=action, quantity=1, request_id=uuid.uuid4().hex
                    )
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            said = dict(caught.value.trailing_metadata() or ())  # type: ignore[arg-type]
            assert said[ON_UNAVAILABLE_KEY] == policy


async def test_the_sdk_applies_the_policy_once_its_retries_are_spent(target: str) -> None:
    async with AsyncClient(target, attempt_timeout=0.5, deadline=0.6) as client:
        let = await client.check(ACCOUNT, "agent.message")
        assert (let.allowed, let.reason) == (True, "unavailable_allowed")
        assert let.cost.micro == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.check(ACCOUNT, "shingle.llm")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with client.reserve(ACCOUNT, "agent.message", 5) as hold:
            assert hold.unbilled
            settled = await hold.settle(3)
        assert settled.cost.micro == 0
        assert settled.message == "unbilled"


async def test_a_short_outage_is_logged_whole(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The decisions held back after a line are logged LOG_EVERY later, with none after them."""
    monkeypatch.setattr(fail_policy, "LOG_EVERY", 0.2)
    monkeypatch.setattr(fail_policy, "_last", {})
    catalog = load_catalog(EXAMPLES / "demo.yaml")
    with caplog.at_level(logging.WARNING, logger="creditgate.transport"):
        for _ in range(5):
            fail_policy.decided_without_redis(catalog, "ShouldRateLimit", "shingle.llm")
        await asyncio.sleep(0.4)
    lines = [r.getMessage() for r in caplog.records if "on_unavailable" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "(1 since the last such line)" in lines[0]
    assert "shingle.llm refused" in lines[1]
    assert "(4 since the last such line)" in lines[1]
