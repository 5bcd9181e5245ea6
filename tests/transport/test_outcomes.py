"""What a failed charge tells its caller: did it happen, and under which request id.

A Redis that got the command but never answered (paused with SIGSTOP) gives DEADLINE_EXCEEDED:
the charge may have been applied. The id the server generated comes back in the trailing
metadata and in a google.rpc.ErrorInfo, and a retry with it replays instead of charging twice.
A Redis that cannot be reached at all gives UNAVAILABLE and nothing is charged.
Each test runs its own redis-server, so pausing or killing it touches no other test.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from creditgate.transport.errors import REQUEST_ID_KEY
from creditgate.v1 import quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.conftest import Sidecar

    from creditgate.domain.catalog import Catalog

TIMEOUT_S = 0.5  # the sidecar's Redis timeout in these tests
PAUSE_BOUND_S = 3.0  # Redis is never left stopped longer than this
ACCOUNT = "acct-1"
BONUS = 50 * 1_000_000


class Rig:
    """A private redis-server, a sidecar on it (fast path on or off), a channel."""

    def __init__(
        self, redis: EmbeddedRedis, engine: Engine, stub: quota_pb2_grpc.QuotaServiceStub
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.quota = stub

    async def bonus(self) -> int:
        state = await self.engine.balance(ACCOUNT)
        return next(p.balance for p in state.pools if p.pool_id == "bonus")


@pytest.fixture(params=["fast", "redis-py"])
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, demo_catalog: Catalog
) -> AsyncIterator[Rig]:
    server_redis = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    client = AsyncRedis.from_url(
        server_redis.url,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    fast = FastRedis(server_redis.url, timeout=TIMEOUT_S) if request.param == "fast" else None
    engine = Engine(client, demo_catalog, test_clock=True, fast=fast)
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await engine.create_account(ACCOUNT, "agent_team")
        await engine.grant(ACCOUNT, "bonus", BONUS, "bonus-1")
        yield Rig(server_redis, engine, quota_pb2_grpc.QuotaServiceStub(channel))
    finally:
        pid = server_redis.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # never leave it stopped
        await channel.close(None)
        await server.stop(None)
        if fast is not None:
            await fast.aclose()
        await client.aclose()
        server_redis.stop()


def _charge(request_id: str = "") -> quota_pb2.CheckAndConsumeRequest:
    # agent.message with model=pro is not taken by the daily pool: it is paid from bonus.
    return quota_pb2.CheckAndConsumeRequest(
        account_id=ACCOUNT,
        action="agent.message",
        quantity=1,
        attributes={"model": "pro", "feature": "chat"},
        request_id=request_id,
    )


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)  # type: ignore[arg-type]
    assert status.code == error.code().value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def test_a_paused_redis_is_deadline_exceeded_and_the_returned_id_replays(rig: Rig) -> None:
    """SIGSTOP during a charge sent without request_id: DEADLINE_EXCEEDED, not UNAVAILABLE.

    The charge reached Redis, so it may have been applied. The generated id is in the trailing
    metadata and in the ErrorInfo; retried with it after SIGCONT, the charge replays: the
    account is charged exactly once.
    """
    warm = await rig.quota.CheckAndConsume(_charge("warm-up"))  # the sidecar learns the plan
    assert warm.allowed
    before = await rig.bonus()
    pid = rig.redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(rig.quota.CheckAndConsume(_charge(), timeout=10), PAUSE_BOUND_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    error = caught.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert "may have been applied" in (error.details() or "")
    generated = dict(error.trailing_metadata() or ())[REQUEST_ID_KEY]
    assert isinstance(generated, str)
    assert len(generated) == 32
    info = _error_info(error)
    assert info.reason == "OUTCOME_UNKNOWN"
    assert info.domain == "creditgate.v1"
    assert info.metadata["request_id"] == generated

    retry = await rig.quota.CheckAndConsume(_charge(generated), timeout=10)
    assert retry.allowed
    assert retry.request_id == generated
    # Redis ran the paused charge when it resumed, so the retry is its replay.
    assert retry.replayed
    assert retry.cost > 0
    assert await rig.bonus() == before - retry.cost


async def test_a_paused_batch_returns_its_id_and_the_retry_replays_each_item(rig: Rig) -> None:
    """SIGSTOP during a CheckAndConsumeBatch: DEADLINE_EXCEEDED carrying the batch id.

    The id is in the trailing metadata and the ErrorInfo, and the message says that items sent
    without an id ran as ``<batch id>-<index>``. Retried with those ids (and the named item's
    own), each item is charged exactly once in all, and asked again every item replays. On the
    fast path the paused batch ran when Redis resumed, so the first retry already replays it;
    redis-py's pipeline first asks SCRIPT EXISTS, which the pause stopped, so nothing ran.
    """
    warm = [_charge("warm-0"), _charge("warm-1")]  # the plan known, the batch script loaded
    await rig.quota.CheckAndConsumeBatch(quota_pb2.CheckAndConsumeBatchRequest(requests=warm))
    before = await rig.bonus()
    items = [_charge(), _charge(), _charge("mine")]
    pid = rig.redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(
                rig.quota.CheckAndConsumeBatch(
                    quota_pb2.CheckAndConsumeBatchRequest(requests=items), timeout=10
                ),
                PAUSE_BOUND_S,
            )
    finally:
        os.kill(pid, signal.SIGCONT)
    error = caught.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    batch_id = dict(error.trailing_metadata() or ())[REQUEST_ID_KEY]
    assert isinstance(batch_id, str)
    assert len(batch_id) == 32
    info = _error_info(error)
    assert (info.reason, info.metadata["request_id"]) == ("OUTCOME_UNKNOWN", batch_id)
    assert (error.details() or "").endswith(
        f"items sent without one ran as {batch_id}-<index> (0-based position in requests):"
        " retry the batch with those ids set"
    )

    ids = [f"{batch_id}-0", f"{batch_id}-1", "mine"]
    for item, rid in zip(items, ids, strict=True):
        item.request_id = rid
    batch = quota_pb2.CheckAndConsumeBatchRequest(requests=items)
    retry = await rig.quota.CheckAndConsumeBatch(batch, timeout=10)
    assert [d.request_id for d in retry.decisions] == ids
    assert all(d.allowed for d in retry.decisions), retry
    if rig.engine.fast is not None:
        assert all(d.replayed for d in retry.decisions), retry
    charged = before - sum(d.cost for d in retry.decisions)
    assert await rig.bonus() == charged  # each item once, whichever call ran it
    again = await rig.quota.CheckAndConsumeBatch(batch, timeout=10)
    assert [(d.request_id, d.replayed) for d in again.decisions] == [(r, True) for r in ids]
    assert await rig.bonus() == charged


async def test_a_killed_redis_is_unavailable_and_charges_nothing(rig: Rig) -> None:
    """Redis killed: the connection is refused, the call is UNAVAILABLE, nothing changed.

    The id is still returned (metadata and ErrorInfo), and after Redis restarts from its AOF
    the balance is what it was.
    """
    assert (await rig.quota.CheckAndConsume(_charge("warm-up"))).allowed
    before = await rig.bonus()
    data_dir = rig.redis.data_dir
    pid = rig.redis.pid
    assert pid is not None
    assert data_dir is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(os.waitpid, pid, 0)
    await asyncio.sleep(0.05)  # let the sidecar's connections see the close
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(rig.quota.CheckAndConsume(_charge(), timeout=10), PAUSE_BOUND_S)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "nothing changed" in (error.details() or "")
    generated = dict(error.trailing_metadata() or ())[REQUEST_ID_KEY]
    info = _error_info(error)
    assert info.reason == "NOT_APPLIED"
    assert info.metadata["request_id"] == generated

    rig.redis.stop()
    rig.redis.__init__(data_dir, appendonly=True)  # type: ignore[misc]
    rig.redis.start()
    restarted = AsyncRedis.from_url(rig.redis.url)
    try:
        engine = Engine(restarted, rig.engine.catalog, test_clock=True)
        state = await engine.balance(ACCOUNT)
    finally:
        await restarted.aclose()
    assert next(p.balance for p in state.pools if p.pool_id == "bonus") == before


async def test_an_error_returns_the_generated_id(sidecar: Sidecar) -> None:
    """An error answer (here NOT_FOUND) carries the id in metadata and ErrorInfo."""
    call = sidecar.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(account_id="nobody", action="agent.message", quantity=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    rid = dict(caught.value.trailing_metadata() or ())[REQUEST_ID_KEY]
    assert _error_info(caught.value).metadata["request_id"] == rid


async def test_an_allowed_charge_returns_its_generated_id_in_metadata(sidecar: Sidecar) -> None:
    """A success carries the same id in the answer and in the trailing metadata."""
    quota = sidecar.quota
    await sidecar.engine.create_account("ok-1", "zite_free")
    call = quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(account_id="ok-1", action="zite.email.send", quantity=1)
    )
    answer = await call
    assert answer.allowed
    assert dict(await call.trailing_metadata())[REQUEST_ID_KEY] == answer.request_id


async def test_a_batch_returns_its_id_and_items_run_under_it(sidecar: Sidecar) -> None:
    """Batch items without request_id run as <batch id>-<index>, errors included."""
    quota = sidecar.quota
    await sidecar.engine.create_account("ok-2", "zite_free")
    item = quota_pb2.CheckAndConsumeRequest(account_id="ok-2", action="zite.email.send", quantity=1)
    bad = quota_pb2.CheckAndConsumeRequest(account_id="ok-2", action="zite.email.send", quantity=0)
    named = quota_pb2.CheckAndConsumeRequest(
        account_id="ok-2", action="zite.email.send", quantity=1, request_id="mine"
    )
    call = quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[item, bad, named])
    )
    answer = await call
    batch_id = dict(await call.trailing_metadata())[REQUEST_ID_KEY]
    ids = [d.request_id for d in answer.decisions]
    assert ids == [f"{batch_id}-0", f"{batch_id}-1", "mine"]
    assert answer.decisions[1].message.startswith("INVALID_ARGUMENT: quantity")
    again = await quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(
            requests=[
                quota_pb2.CheckAndConsumeRequest(
                    account_id="ok-2", action="zite.email.send", quantity=1, request_id=ids[0]
                )
            ]
        )
    )
    assert again.decisions[0].replayed


async def test_require_request_id_refuses_charges_without_one(
    redis: AsyncRedis, demo_catalog: Catalog
) -> None:
    """CREDITGATE_REQUIRE_REQUEST_ID: a charge without an id is INVALID_ARGUMENT naming it."""
    engine = Engine(redis, demo_catalog, test_clock=True, require_request_id=True)
    await engine.create_account("strict", "zite_free")
    before = await engine.balance("strict")
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    quota = quota_pb2_grpc.QuotaServiceStub(channel)
    item = quota_pb2.CheckAndConsumeRequest(
        account_id="strict", action="zite.email.send", quantity=1
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await quota.CheckAndConsume(item)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(
            "request_id is required: this server runs with CREDITGATE_REQUIRE_REQUEST_ID=true"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await quota.Reserve(
                quota_pb2.ReserveRequest(account_id="strict", action="zite.email.send", quantity=1)
            )
        assert (caught.value.details() or "").startswith("reservation_id is required")
        answer = await quota.CheckAndConsumeBatch(
            quota_pb2.CheckAndConsumeBatchRequest(requests=[item])
        )
        assert answer.decisions[0].message.startswith("INVALID_ARGUMENT: request_id is required")
        assert await engine.balance("strict") == before  # the refused calls changed nothing
        item.request_id = "given"
        assert (await quota.CheckAndConsume(item)).allowed
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_require_request_id_lets_a_dry_run_through_without_one(
    redis: AsyncRedis, demo_catalog: Catalog
) -> None:
    """A dry run changes nothing, so CREDITGATE_REQUIRE_REQUEST_ID does not ask it for an id.

    CheckAndConsume, a batch item and Reserve, each dry and without an id: answered, under a
    generated id (in the answer and the trailing metadata), and the account is untouched.
    """
    engine = Engine(redis, demo_catalog, test_clock=True, require_request_id=True)
    await engine.create_account("strict", "zite_free")
    before = await engine.balance("strict")
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    quota = quota_pb2_grpc.QuotaServiceStub(channel)
    dry = quota_pb2.CheckAndConsumeRequest(
        account_id="strict", action="zite.email.send", quantity=1, dry_run=True
    )
    try:
        call = quota.CheckAndConsume(dry)
        answer = await call
        assert (answer.allowed, answer.dry_run, len(answer.request_id)) == (True, True, 32)
        assert dict(await call.trailing_metadata())[REQUEST_ID_KEY] == answer.request_id
        batch = await quota.CheckAndConsumeBatch(
            quota_pb2.CheckAndConsumeBatchRequest(requests=[dry])
        )
        assert (batch.decisions[0].allowed, batch.decisions[0].dry_run) == (True, True)
        held = await quota.Reserve(
            quota_pb2.ReserveRequest(
                account_id="strict", action="zite.email.send", quantity=1, dry_run=True
            )
        )
        assert (held.allowed, held.dry_run) == (True, True)
        assert held.request_id
        assert await engine.balance("strict") == before
    finally:
        await channel.close(None)
        await server.stop(None)
