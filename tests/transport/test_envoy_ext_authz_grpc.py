"""envoy.service.auth.v3.Authorization/Check called directly over gRPC.

The demo catalog's gateway.envoy_ext_authz maps the request. Every allowed answer and every
refusal, each checked for its HTTP status and for what it charged (nothing, on any refusal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format

from creditgate.domain.catalog import load_catalog
from creditgate.engine import Engine
from creditgate.wiring.server import build_server
from envoy_kit import without_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis
    from tests.conftest import Sidecar

    from creditgate.domain.catalog import Catalog

MICRO = 1_000_000
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
USD = MICRO
Ctx = attribute_context_pb2.AttributeContext


def _ask(path: str = "/", method: str = "GET", **headers: str) -> Any:  # noqa: ANN401
    http = Ctx.HttpRequest(method=method, path=path, headers=headers)
    return external_auth_pb2.CheckRequest(attributes=Ctx(request=Ctx.Request(http=http)))


def _h(account: str, cost: int | None = None, **more: str) -> dict[str, str]:
    headers = {"x-account-id": account, **more}
    if cost is not None:
        headers["x-creditgate-cost"] = str(cost)
    return headers


def _options(options: Any) -> dict[str, str]:  # noqa: ANN401
    return {o.header.key: o.header.value for o in options}


async def _account(sidecar: Sidecar, account: str, units: int, plan: str = "agent_free") -> None:
    await sidecar.engine.create_account(account, plan)
    if units:
        await sidecar.engine.grant(account, "bonus", units * MICRO, "g")


async def _pools(sidecar: Sidecar, account: str) -> dict[str, int]:
    state = await sidecar.engine.balance(account)
    return {p.pool_id: p.balance for p in state.pools}


def _stub(sidecar: Sidecar) -> Any:  # noqa: ANN401
    return external_auth_pb2_grpc.AuthorizationStub(sidecar.channel)


async def test_allowed_sends_headers_both_ways_and_the_id_as_metadata(sidecar: Sidecar) -> None:
    """3 of 10 units: OK; upstream learns the id and 7 left, the client the RateLimit-* headers."""
    await _account(sidecar, "az-ok", 10)
    answer = await _stub(sidecar).Check(
        _ask("/v1/chat", "POST", **_h("az-ok", 3, **{"x-request-id": "r1"}))
    )
    assert answer.status.code == grpc.StatusCode.OK.value[0]
    assert answer.WhichOneof("http_response") == "ok_response"
    upstream = _options(answer.ok_response.headers)
    assert upstream == {"x-creditgate-request-id": "r1", "x-creditgate-remaining": "7"}
    assert all(
        o.append_action == o.OVERWRITE_IF_EXISTS_OR_ADD for o in answer.ok_response.headers
    )  # a client cannot pass its own x-creditgate-* to the upstream
    client = _options(answer.ok_response.response_headers_to_add)
    assert client["RateLimit-Limit"] == "10"
    assert client["RateLimit-Remaining"] == "7"
    assert client["RateLimit-Reset"] == "0"
    assert client["x-creditgate-reason"] == "ALLOWED"
    assert client["x-creditgate-request-id"] == "r1"
    meta = json_format.MessageToDict(answer.dynamic_metadata)
    assert meta == {"request_id": "r1", "account_id": "az-ok", "action": "agent.message",
                    "reason": "ALLOWED", "remaining": 7.0}  # fmt: skip
    assert (await _pools(sidecar, "az-ok"))["bonus"] == 7 * MICRO


async def test_without_a_request_id_one_is_made_and_passed_on(sidecar: Sidecar) -> None:
    await _account(sidecar, "az-noid", 2)
    answer = await _stub(sidecar).Check(_ask(**_h("az-noid")))
    made = _options(answer.ok_response.headers)["x-creditgate-request-id"]
    assert made
    assert json_format.MessageToDict(answer.dynamic_metadata)["request_id"] == made


async def test_a_request_id_used_again_is_409_and_charged_once(sidecar: Sidecar) -> None:
    """The app would run again: a gateway's replay is refused, never let through uncharged."""
    await _account(sidecar, "az-retry", 5)
    ask = _ask(**_h("az-retry", 2, **{"x-request-id": "same"}))
    first = await _stub(sidecar).Check(ask)
    again = await _stub(sidecar).Check(ask)
    assert first.HasField("ok_response")
    assert again.denied_response.status.code == 409
    body = json.loads(again.denied_response.body)
    assert (body["reason"], body["request_id"]) == ("DUPLICATE_REQUEST_ID", "same")
    assert "already used" in body["message"]
    assert (await _pools(sidecar, "az-retry"))["bonus"] == 3 * MICRO


async def test_the_route_names_the_action_and_headers_the_attributes(sidecar: Sidecar) -> None:
    """x-model pro prices agent.message at 3 a unit; POST /v1/runs/ is glue.app_action."""
    await _account(sidecar, "az-route", 10)
    pro = await _stub(sidecar).Check(_ask("/v1/chat", **_h("az-route", 2, **{"x-model": "pro"})))
    assert pro.HasField("ok_response")
    assert (await _pools(sidecar, "az-route"))["bonus"] == 4 * MICRO
    glue = await _stub(sidecar).Check(_ask("/v1/runs/7", "POST", **_h("az-route")))
    assert json.loads(glue.denied_response.body)["reason"] == "NOT_ENTITLED"
    assert "glue.app_action" in json.loads(glue.denied_response.body)["message"]


def _denial(answer: Any) -> tuple[int, str, dict[str, str], dict[str, Any]]:  # noqa: ANN401
    assert answer.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert answer.WhichOneof("http_response") == "denied_response"
    denied = answer.denied_response
    headers = _options(denied.headers)
    assert headers["content-type"] == "application/json"
    body = json.loads(denied.body)
    assert headers["x-creditgate-reason"] == body["reason"]
    assert set(body) == {"reason", "message", "retry_at", "retry_at_unix_ms", "request_id"}
    return denied.status.code, body["reason"], headers, body


async def test_out_of_credits_is_402_with_what_is_left(sidecar: Sidecar) -> None:
    """2 asked of 1: 402, RateLimit-Remaining 1 (the cost less the shortfall), nothing taken."""
    await _account(sidecar, "az-402", 1)
    answer = await _stub(sidecar).Check(_ask(**_h("az-402", 2, **{"x-request-id": "p1"})))
    status, reason, headers, body = _denial(answer)
    assert (status, reason) == (402, "INSUFFICIENT_CREDITS")
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("1", "1")
    assert headers["x-creditgate-request-id"] == body["request_id"] == "p1"
    assert body["retry_at"] is None
    assert "retry-after" not in headers
    assert (await _pools(sidecar, "az-402"))["bonus"] == 1 * MICRO


async def test_a_daily_allowance_used_up_is_402_with_retry_after(sidecar: Sidecar) -> None:
    await _account(sidecar, "az-daily", 0)
    chat = {"x-model": "light", "x-feature": "chat"}
    assert (await _stub(sidecar).Check(_ask(**_h("az-daily", 100, **chat)))).HasField("ok_response")
    status, _, headers, body = _denial(await _stub(sidecar).Check(_ask(**_h("az-daily", **chat))))
    assert status == 402
    assert body["retry_at"].endswith("T00:00:00Z")
    assert 0 < int(headers["RateLimit-Reset"]) <= 86_400
    assert headers["retry-after"] == headers["RateLimit-Reset"]


async def test_a_spend_cap_is_429(sidecar: Sidecar) -> None:
    """glue_starter with its overage cap at 0: past the 2,000 base credits is the spend cap."""
    await sidecar.engine.create_account("az-cap", "glue_starter")
    await sidecar.engine.set_pool_settings("az-cap", "overage", cap=0)
    answer = await _stub(sidecar).Check(_ask("/v1/runs/1", "POST", **_h("az-cap", 2001)))
    status, reason, _, _ = _denial(answer)
    assert (status, reason) == (429, "SPEND_CAP_REACHED")
    assert (await _pools(sidecar, "az-cap"))["base"] == 2000 * MICRO


async def test_a_suspended_account_is_403(sidecar: Sidecar) -> None:
    await _account(sidecar, "az-susp", 5)
    await sidecar.engine.update_account("az-susp", status="suspended")
    status, reason, _, _ = _denial(await _stub(sidecar).Check(_ask(**_h("az-susp"))))
    assert (status, reason) == (403, "ACCOUNT_SUSPENDED")
    assert (await _pools(sidecar, "az-susp"))["bonus"] == 5 * MICRO


async def test_a_stopped_account_is_403_until_its_renewal(sidecar: Sidecar) -> None:
    """$40 of overage spent, the cap lowered to $20: stopped, even with a block bought."""
    await sidecar.engine.create_account("az-stop", "glue_starter")
    assert (await sidecar.engine.consume("az-stop", "glue.app_action", 3500, {}, "s1")).allowed
    await sidecar.engine.set_pool_settings("az-stop", "overage", cap=20 * USD)
    answer = await _stub(sidecar).Check(_ask("/v1/runs/1", "POST", **_h("az-stop")))
    status, reason, headers, body = _denial(answer)
    assert (status, reason) == (403, "ACCOUNT_STOPPED")
    assert body["retry_at"] is not None
    assert int(headers["retry-after"]) > 0
    assert (await _pools(sidecar, "az-stop"))["overage"] == 500 * MICRO


@pytest.mark.parametrize(
    ("request_", "status", "reason", "words"),
    [
        (_ask("/v1/runs/1", "POST", **_h("az-bad")), 403, "NOT_ENTITLED", "glue.app_action"),
        (_ask(**{"x-user": "az-bad"}), 403, "NO_ACCOUNT", "'x-account-id' is missing"),
        (_ask(**_h("az-none")), 403, "NOT_FOUND", "az-none"),
        (_ask(**_h("az-bad", **{"x-creditgate-cost": "0"})), 400, "INVALID_QUANTITY", "above 0"),
        (_ask(**_h("az-bad", 10**13)), 400, "INVALID_ARGUMENT", "quantity must be"),
        (
            _ask(**_h("az-bad", **{"x-request-id": "bad id"})),
            400,
            "INVALID_ARGUMENT",
            "request_id 'bad id' is invalid",
        ),
    ],
    ids=["not-entitled", "no-account", "no-such-account", "zero", "huge", "bad-id"],
)
async def test_a_request_that_cannot_be_billed_is_refused_with_a_reason(
    sidecar: Sidecar,
    request_: Any,  # noqa: ANN401
    status: int,
    reason: str,
    words: str,
) -> None:
    """Refused with a body naming the fault, never a gRPC error (fail-open would pass it)."""
    await _account(sidecar, "az-bad", 5)
    found_status, found, _, body = _denial(await _stub(sidecar).Check(request_))
    assert (found_status, found) == (status, reason)
    assert words in body["message"]
    assert (await _pools(sidecar, "az-bad"))["bonus"] == 5 * MICRO


async def test_a_request_id_reused_for_another_request_is_409(sidecar: Sidecar) -> None:
    await _account(sidecar, "az-409", 5)
    await _stub(sidecar).Check(_ask(**_h("az-409", 1, **{"x-request-id": "twice"})))
    again = await _stub(sidecar).Check(_ask(**_h("az-409", 2, **{"x-request-id": "twice"})))
    status, reason, _, _ = _denial(again)
    assert (status, reason) == (409, "FAILED_PRECONDITION")
    assert (await _pools(sidecar, "az-409"))["bonus"] == 4 * MICRO


async def test_raw_header_map_is_read_too(sidecar: Sidecar) -> None:
    """With encode_raw_headers Envoy sends header_map instead of headers."""
    from envoy.config.core.v3 import base_pb2  # noqa: PLC0415

    await _account(sidecar, "az-raw", 3)
    ask = _ask()
    ask.attributes.request.http.header_map.headers.append(
        base_pb2.HeaderValue(key="x-account-id", raw_value=b"az-raw")
    )
    assert (await _stub(sidecar).Check(ask)).HasField("ok_response")
    assert (await _pools(sidecar, "az-raw"))["bonus"] == 2 * MICRO


async def test_redis_down_is_unavailable(demo_catalog: Catalog, tmp_path: Path) -> None:
    """Redis gone: a gRPC UNAVAILABLE (so Envoy's failure_mode_allow decides), not an answer."""
    async with (
        without_redis(tmp_path, demo_catalog, "az-lost") as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(_ask(**_h("az-lost")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_account_from_a_jwt_claim_in_metadata_context(
    redis: AsyncRedis, tmp_path: Path
) -> None:
    """account_claim: the account is jwt_authn's payload.sub; the client's header is ignored."""
    plans = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    plans["gateway"]["envoy_ext_authz"] = {
        "account_claim": {"namespace": "envoy.filters.http.jwt_authn", "path": ["payload", "sub"]},
        "default_action": "agent.message",
    }
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(plans), encoding="utf-8")
    engine = Engine(redis, load_catalog(tmp_path / "plans.yaml"), test_clock=True)
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    try:
        for account in ("az-jwt", "az-forged"):
            await engine.create_account(account, "agent_free")
            await engine.grant(account, "bonus", 5 * MICRO, "g")
        ask = _ask(**_h("az-forged"))
        filter_metadata = ask.attributes.metadata_context.filter_metadata
        filter_metadata["envoy.filters.http.jwt_authn"].update({"payload": {"sub": "az-jwt"}})
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            allowed = await stub.Check(ask)
            assert json_format.MessageToDict(allowed.dynamic_metadata)["account_id"] == "az-jwt"
            unsigned = await stub.Check(_ask(**_h("az-forged")))  # no metadata: no account
            assert json.loads(unsigned.denied_response.body)["reason"] == "NO_ACCOUNT"
        balances = [(await engine.balance(a)).pools for a in ("az-jwt", "az-forged")]
        bonus = [next(p.balance for p in pools if p.pool_id == "bonus") for pools in balances]
        assert bonus == [4 * MICRO, 5 * MICRO]
    finally:
        await server.stop(None)


async def test_a_check_may_be_up_to_128_kib(sidecar: Sidecar) -> None:
    """Other methods stop at 64 KiB; a Check carries the request's headers: 90 KB pass."""
    await _account(sidecar, "az-big", 2)
    big = _h("az-big", **{f"x-pad-{i}": "v" * 1000 for i in range(90)})
    assert (await _stub(sidecar).Check(_ask(**big))).HasField("ok_response")
    huge = _h("az-big", **{f"x-pad-{i}": "v" * 1000 for i in range(140)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(sidecar).Check(_ask(**huge))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "a valid one needs at most 131,072" in str(caught.value.details())
    assert (await _pools(sidecar, "az-big"))["bonus"] == 1 * MICRO


async def test_a_refusal_of_the_mapping_names_the_request_id(sidecar: Sidecar) -> None:
    answer = await _stub(sidecar).Check(_ask(**{"x-user": "az-x", "x-request-id": "envoy-req-2"}))
    body = json.loads(answer.denied_response.body)
    assert (body["reason"], body["request_id"]) == ("NO_ACCOUNT", "envoy-req-2")
