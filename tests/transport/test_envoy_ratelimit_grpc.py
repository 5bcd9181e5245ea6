"""envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit called directly over gRPC.

What Envoy sends is in tests/behind_envoy; here every answer the mapping and the guard can give,
each checked for what it charged (nothing, on any refusal).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import descriptor_pb2, wrappers_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from envoy_kit import without_redis

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Sidecar

    from creditgate.domain.catalog import Catalog

MICRO = 1_000_000
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


def _descriptor(hits: int | None = None, **entries: str) -> Any:  # noqa: ANN401
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries.items()
        ]
    )
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return d


def _ask(*descriptors: Any, domain: str = "creditgate", hits: int = 0) -> Any:  # noqa: ANN401
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def _headers(response: Any) -> dict[str, str]:  # noqa: ANN401
    return {h.key: h.value for h in response.response_headers_to_add}


async def _account(sidecar: Sidecar, account: str, units: int) -> None:
    await sidecar.engine.create_account(account, "agent_free")
    await sidecar.engine.grant(account, "bonus", units * MICRO, "g")


async def _bonus(sidecar: Sidecar, account: str) -> int:
    state = await sidecar.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "bonus")


@pytest.mark.parametrize(
    ("symbol", "method"),
    [
        ("envoy.service.ratelimit.v3.RateLimitService", "RateLimitService/ShouldRateLimit"),
        ("envoy.service.auth.v3.Authorization", "Authorization/Check"),
    ],
)
async def test_reflection_describes_the_envoy_services(
    sidecar: Sidecar, symbol: str, method: str
) -> None:
    """Grpcurl can describe them: reflection serves the files of both Envoy services."""
    stub = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)

    async def requests():  # type: ignore[no-untyped-def]  # noqa: ANN202
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)

    methods = set()
    async for response in stub.ServerReflectionInfo(requests()):
        assert not response.HasField("error_response"), response.error_response
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            methods |= {f"{s.name}/{m.name}" for s in proto.service for m in s.method}
    assert method in methods


async def test_allowed_answers_ok_with_the_descriptor_status(sidecar: Sidecar) -> None:
    """3 of 10 units: OK; the second descriptor's status carries 10 before and 7 left."""
    await _account(sidecar, "rl-ok", 10)
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    answer = await stub.ShouldRateLimit(
        _ask(_descriptor(gate="x"), _descriptor(account="rl-ok", request_id="r1"), hits=3)
    )
    assert answer.overall_code == OK
    assert [s.code for s in answer.statuses] == [OK, OK]
    assert answer.statuses[1].limit_remaining == 7
    assert answer.statuses[1].current_limit.requests_per_unit == 10
    assert answer.statuses[1].current_limit.name == "agent_credit"
    assert _headers(answer)["x-creditgate-request-id"] == "r1"
    assert [(h.key, h.value) for h in answer.request_headers_to_add] == [
        ("x-creditgate-request-id", "r1")
    ]
    assert answer.raw_body == b""
    assert await _bonus(sidecar, "rl-ok") == 7 * MICRO


async def test_the_descriptors_hits_addend_wins_and_zero_is_a_dry_run(sidecar: Sidecar) -> None:
    """Per-descriptor hits_addend 2 beats the request's 5; 0 peeks and takes nothing."""
    await _account(sidecar, "rl-hits", 10)
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    await stub.ShouldRateLimit(_ask(_descriptor(2, account="rl-hits"), hits=5))
    assert await _bonus(sidecar, "rl-hits") == 8 * MICRO
    peek = await stub.ShouldRateLimit(_ask(_descriptor(0, account="rl-hits"), hits=5))
    assert peek.overall_code == OK
    assert await _bonus(sidecar, "rl-hits") == 8 * MICRO
    await stub.ShouldRateLimit(_ask(_descriptor(account="rl-hits")))  # unset: 1
    assert await _bonus(sidecar, "rl-hits") == 7 * MICRO


async def test_a_denial_has_reset_seconds_from_retry_at(sidecar: Sidecar) -> None:
    """A daily allowance used up: OVER_LIMIT, and the reset is the seconds to midnight UTC."""
    await sidecar.engine.create_account("rl-daily", "agent_free")
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    chat = {"account": "rl-daily", "model": "light", "feature": "chat"}
    assert (await stub.ShouldRateLimit(_ask(_descriptor(**chat), hits=100))).overall_code == OK
    denied = await stub.ShouldRateLimit(_ask(_descriptor(**chat, request_id="d2")))
    assert denied.overall_code == OVER_LIMIT
    body = json.loads(denied.raw_body)
    assert body["reason"] == "INSUFFICIENT_CREDITS"
    assert body["retry_at"].endswith("T00:00:00Z")
    assert body["request_id"] == "d2"
    seconds = denied.statuses[0].duration_until_reset.seconds
    assert 0 < seconds <= 86_400
    assert _headers(denied)["RateLimit-Reset"] == str(seconds)
    assert _headers(denied)["x-creditgate-reason"] == "INSUFFICIENT_CREDITS"


@pytest.mark.parametrize(
    ("request_", "reason", "words"),
    [
        (_ask(_descriptor(account="rl-bad"), domain="other"), "UNKNOWN_DOMAIN", "'other'"),
        (_ask(_descriptor(user="rl-bad")), "NO_ACCOUNT", "no descriptor has an entry 'account'"),
        (
            _ask(_descriptor(account="rl-bad"), _descriptor(account="rl-bad")),
            "MANY_ACCOUNTS",
            "descriptors 0, 1 each name an account",
        ),
        (
            _ask(_descriptor(account="rl-bad", request_id="bad id")),
            "INVALID_ARGUMENT",
            "request_id 'bad id' is invalid",
        ),
        (_ask(_descriptor(account="rl-none")), "NOT_FOUND", "rl-none"),
        (_ask(_descriptor(10**13, account="rl-bad")), "INVALID_ARGUMENT", "quantity must be"),
    ],
    ids=["unknown-domain", "no-account", "two-accounts", "bad-id", "no-such-account", "huge"],
)
async def test_a_request_that_cannot_be_billed_is_over_limit_with_a_reason(
    sidecar: Sidecar,
    request_: Any,  # noqa: ANN401
    reason: str,
    words: str,
) -> None:
    """Refused with a body naming the fault, never a gRPC error (fail-open would pass it)."""
    await _account(sidecar, "rl-bad", 5)
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    answer = await stub.ShouldRateLimit(request_)
    assert answer.overall_code == OVER_LIMIT
    assert all(s.code == OVER_LIMIT for s in answer.statuses)
    body = json.loads(answer.raw_body)
    assert body["reason"] == reason
    assert words in body["message"]
    assert _headers(answer)["x-creditgate-reason"] == reason
    assert await _bonus(sidecar, "rl-bad") == 5 * MICRO


async def test_redis_down_is_unavailable(demo_catalog: Catalog, tmp_path: Path) -> None:
    """Redis gone: a gRPC UNAVAILABLE (so Envoy's failure mode decides), not an answer."""
    async with (
        without_redis(tmp_path, demo_catalog, "rl-lost") as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ShouldRateLimit(_ask(_descriptor(account="rl-lost")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_hold_never_settled_expires_and_gives_its_credits_back(sidecar: Sidecar) -> None:
    """A hold never settled (Envoy gone) goes back after its 600 s; a late settle is refused.

    Domain ``llm`` reserves 4,096 tokens, its default estimate.
    """
    await sidecar.engine.create_account("rl-hold", "shingle_free")
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    reserve = _ask(_descriptor(phase="reserve", account="rl-hold", request_id="h1"), domain="llm")
    answer = await stub.ShouldRateLimit(reserve)
    assert answer.overall_code == OK
    assert _headers(answer)["RateLimit-Remaining"] == str(100_000 - 4096)
    assert dict(answer.dynamic_metadata) == {"hold": "h1"}  # the stream-done call's `held`

    async def tokens() -> int:
        state = await sidecar.engine.balance("rl-hold")
        return next(p.balance for p in state.pools if p.pool_id == "tokens") // MICRO

    assert await tokens() == 100_000 - 4096
    await sidecar.engine.advance_clock("rl-hold", 599)
    assert await tokens() == 100_000 - 4096
    await sidecar.engine.advance_clock("rl-hold", 2)
    assert await tokens() == 100_000
    late = _ask(
        _descriptor(phase="settle", account="rl-hold", request_id="h1", usage="9", held="h1")
    )
    late.domain = "llm"
    refused = await stub.ShouldRateLimit(late)
    assert refused.overall_code == OVER_LIMIT
    assert json.loads(refused.raw_body)["reason"] == "FAILED_PRECONDITION"
    assert await tokens() == 100_000


async def test_a_refusal_of_the_mapping_names_the_request_id(sidecar: Sidecar) -> None:
    """No account entry, but Envoy's request id: the refusal carries it, for Envoy's logs."""
    stub = rls_pb2_grpc.RateLimitServiceStub(sidecar.channel)
    answer = await stub.ShouldRateLimit(_ask(_descriptor(user="x", request_id="envoy-req-1")))
    assert answer.overall_code == OVER_LIMIT
    assert json.loads(answer.raw_body)["request_id"] == "envoy-req-1"
    assert _headers(answer)["x-creditgate-request-id"] == "envoy-req-1"
    bad = await stub.ShouldRateLimit(_ask(_descriptor(user="x", request_id="no spaces")))
    assert json.loads(bad.raw_body)["request_id"] == ""  # an invalid id is not echoed
