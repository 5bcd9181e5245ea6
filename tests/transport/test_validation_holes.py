"""Issue 17 item 8: inputs that used to slip through validation.

Ids ending in a newline matched ``^...$`` (``$`` also matches before a final newline); they
are refused now, over gRPC, with nothing created or charged. An unknown action on an unknown
account is NOT_FOUND: the account is checked first, as for every other call on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar


async def test_ids_ending_in_a_newline_are_refused(sidecar: Sidecar) -> None:
    """account_id, request_id and attribute keys with a trailing newline: INVALID_ARGUMENT."""
    await sidecar.engine.create_account("demo-zite-pro", "zite_pro")
    before = await sidecar.engine.balance("demo-zite-pro")
    cases = [
        (
            sidecar.admin.CreateAccount,
            admin_pb2.CreateAccountRequest(account_id="demo-new\n", plan_id="zite_pro"),
            "account_id 'demo-new\\n' is invalid",
        ),
        (
            sidecar.quota.CheckAndConsume,
            quota_pb2.CheckAndConsumeRequest(
                account_id="demo-zite-pro\n", action="zite.email.send", quantity=1
            ),
            "account_id 'demo-zite-pro\\n' is invalid",
        ),
        (
            sidecar.quota.CheckAndConsume,
            quota_pb2.CheckAndConsumeRequest(
                account_id="demo-zite-pro", action="zite.email.send", quantity=1, request_id="r\n"
            ),
            "request_id 'r\\n' is invalid",
        ),
        (
            sidecar.quota.CheckAndConsume,
            quota_pb2.CheckAndConsumeRequest(
                account_id="demo-zite-pro",
                action="zite.email.send",
                quantity=1,
                attributes={"model\n": "x"},
            ),
            "attributes: key 'model\\n' must be 1-64 characters",
        ),
    ]
    for method, request, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, text
        assert (caught.value.details() or "").startswith(text), caught.value.details()
    assert await sidecar.engine.balance("demo-zite-pro") == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sidecar.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="demo-new"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_action_on_unknown_account_is_not_found(sidecar: Sidecar) -> None:
    """The account is checked first: NOT_FOUND, on its own and inside a batch."""
    request = quota_pb2.CheckAndConsumeRequest(account_id="ghost", action="no.such", quantity=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sidecar.quota.CheckAndConsume(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "account 'ghost' does not exist: create it with AdminService"
    answer = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[request])
    )
    assert answer.decisions[0].message.startswith("NOT_FOUND: account 'ghost' does not exist")


async def test_unknown_action_on_a_known_account_is_a_denial(sidecar: Sidecar) -> None:
    """On an account that exists an unknown action stays an answer: REASON_UNKNOWN_ACTION."""
    await sidecar.engine.create_account("real", "zite_free")
    request = quota_pb2.CheckAndConsumeRequest(account_id="real", action="no.such", quantity=1)
    answer = await sidecar.quota.CheckAndConsume(request)
    assert not answer.allowed
    assert answer.reason == quota_pb2.REASON_UNKNOWN_ACTION
    batch = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[request])
    )
    assert batch.decisions[0].reason == quota_pb2.REASON_UNKNOWN_ACTION
