"""Issue 17 item 5: one client, or many, cannot exhaust the sidecar's memory.

A real ``python -m creditgate serve`` on the test Redis gets the abuse that took it to 832 MiB:
CheckAndConsumeBatch calls of 100,000 items (2.8 MB), 16 and then 64 in flight, and batches
that fit under the message cap but hold too many items or attributes. Then, on 8 connections
at once, what per-call limits could not bound: 128 valid 1 MiB batches, 256 refused
100,000-item batches just under 1 MiB, and 1,000 CheckAndConsume calls of 1 MB (before the
budget of transport/budget.py, each alone: 857-890, 336-444 and 596-805 MiB). Its peak RSS
(VmHWM in /proc/PID/status) must stay under the 256 MiB limit of deploy/kubernetes/sidecar.yaml,
calls over the budget must get a RESOURCE_EXHAUSTED that names the setting and changes nothing,
and valid batches must still be answered.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.transport import limits
from creditgate.v1 import admin_pb2, admin_pb2_grpc, quota_pb2, quota_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio import Redis as AsyncRedis

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB = 256  # deploy/kubernetes/sidecar.yaml's memory limit
# 28 bytes on the wire, as in the 2.8 MB batch of 100,000 items.
TINY = quota_pb2.CheckAndConsumeRequest(account_id="acct-1", action="zite.email.send", quantity=1)
BATCH = "/creditgate.v1.QuotaService/CheckAndConsumeBatch"
SEND = [("grpc.max_send_message_length", -1)]
# Channels to one target share one connection unless each has its own subchannel pool.
OWN_CONNECTION = [*SEND, ("grpc.use_local_subchannel_pool", 1)]
# The budget's refusal (transport/budget.py): the limit, the setting, and what to do.
BUSY = re.compile(
    r"the sidecar holds [\d,]+ bytes of requests in flight, and its limit of [\d,]+ "
    r"\(CREDITGATE_MAX_BYTES_IN_FLIGHT\) leaves no room to read one more of up to [\d,]+; "
    r"nothing was done: retry after a backoff, or send smaller batches|"
    r"the sidecar is serving its limit of [\d,]+ calls at once "
    r"\(CREDITGATE_MAX_CALLS_IN_FLIGHT\); nothing was done: retry after a backoff"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(redis_url: str, redis: AsyncRedis) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The sidecar in its own process (no ledger, no metrics), and its address."""
    del redis  # flushed for this test
    target = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "CREDITGATE_REDIS_URL": redis_url,
        "CREDITGATE_LISTEN": target,
        "CREDITGATE_METRICS_PORT": "0",
        "CREDITGATE_LEDGER_URL": "",
        "CREDITGATE_CONFIG": str(ROOT / "examples" / "demo.yaml"),
    }
    proc = subprocess.Popen([sys.executable, "-m", "creditgate", "serve"], env=env, cwd=ROOT)
    try:
        yield proc, target
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status(pid: int, field: str) -> int:
    """A VmRSS/VmHWM line of /proc/PID/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(field)


def _connections(pid: int, port: int) -> int:
    """Established TCP connections that process ``pid`` accepted on ``port``."""
    sockets = {str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    established = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state, inode = line.split()[1], line.split()[3], line.split()[9]
            if (
                int(local.rsplit(":", 1)[1], 16) == port
                and state == "01"  # ESTABLISHED
                and f"socket:[{inode}]" in sockets
            ):
                established += 1
    return established


async def _ready(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(200):
        try:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    msg = "the sidecar did not start"
    raise AssertionError(msg)


def _item(i: int, **fields: object) -> quota_pb2.CheckAndConsumeRequest:
    given = {"account_id": "big", "request_id": f"r{i}", **fields}
    return quota_pb2.CheckAndConsumeRequest(action="zite.email.send", quantity=1, **given)


async def _spread(
    channels: list[grpc.aio.Channel], requests: list[bytes], method: str = BATCH
) -> list[bytes | grpc.aio.AioRpcError]:
    """Send pre-encoded ``requests`` all at once, round-robin over ``channels``."""
    sends = [channel.unary_unary(method) for channel in channels]
    results = await asyncio.gather(
        *(sends[i % len(sends)](r, timeout=60) for i, r in enumerate(requests)),
        return_exceptions=True,
    )
    for result in results:
        if not isinstance(result, bytes | grpc.aio.AioRpcError):
            raise result
    return results


def _busy(result: object) -> bool:
    """Whether ``result`` is the budget's refusal."""
    return (
        isinstance(result, grpc.aio.AioRpcError)
        and result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and BUSY.fullmatch(result.details() or "") is not None
    )


async def _flood(
    channel: grpc.aio.Channel, request: bytes, in_flight: int
) -> list[grpc.aio.AioRpcError]:
    """``in_flight`` copies of a pre-encoded batch at once; every one must fail.

    Returns the errors other than the budget's refusal (those ran nothing either).
    """
    results = await _spread([channel], [request] * in_flight)
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == in_flight, [r for r in results if r not in errors]
    refused = [e for e in errors if not _busy(e)]
    assert refused, "the budget refused every call: none was checked"
    return refused


@pytest.mark.timeout(180)
async def test_oversized_batches_do_not_exhaust_memory(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """100,000-item batches, 16 then 64 in flight: refused, and peak RSS stays under 256 MiB."""
    proc, target = server
    async with grpc.aio.insecure_channel(target, options=SEND) as channel:
        await _ready(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        quota = quota_pb2_grpc.QuotaServiceStub(channel)
        await admin.CreateAccount(
            admin_pb2.CreateAccountRequest(account_id="big", plan_id="zite_free")
        )
        start = _status(proc.pid, "VmRSS")
        huge = quota_pb2.CheckAndConsumeBatchRequest(requests=[TINY] * 100_000).SerializeToString()
        assert len(huge) > 2_000_000
        for in_flight in (16, 64):
            for error in await _flood(channel, huge, in_flight):
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        many = quota_pb2.CheckAndConsumeBatchRequest(requests=[TINY] * 30_000).SerializeToString()
        assert len(many) < 1024 * 1024  # under the message cap: refused by counting
        for error in await _flood(channel, many, 64):
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details() == (
                "the request is not a valid message: a batch holds at most 1000 requests; "
                "this one has more: split it"
            )
        wide = quota_pb2.CheckAndConsumeBatchRequest(
            requests=[_item(0, attributes={f"k{i}": "" for i in range(60_000)})]
        ).SerializeToString()
        for error in await _flood(channel, wide, 64):
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").endswith(
                "requests[0].attributes: at most 32 entries; this one has more"
            )
        single = _item(0, attributes={f"k{i}": "" for i in range(20_000)})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await quota.CheckAndConsume(single)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (caught.value.details() or "").startswith("CheckAndConsume request is ")
        valid = await quota.CheckAndConsumeBatch(
            quota_pb2.CheckAndConsumeBatchRequest(requests=[_item(i) for i in range(1000)])
        )
        assert sum(d.allowed for d in valid.decisions) > 0
        peak = _status(proc.pid, "VmHWM")
        print(f"RSS at start {start} MiB, peak {peak} MiB")  # noqa: T201 - the figure
        assert peak < LIMIT_MIB, (start, peak)


def _wide_batch(call: int) -> bytes:
    """A valid batch of about 1 MiB: 850 real charges of 32 attributes, ids unique to ``call``."""
    attributes = {f"key{j:02d}": "v" * 24 for j in range(32)}
    return quota_pb2.CheckAndConsumeBatchRequest(
        requests=[_item(0, request_id=f"c{call}-{i}", attributes=attributes) for i in range(850)]
    ).SerializeToString()


async def _integration_balance(quota: quota_pb2_grpc.QuotaServiceStub) -> int:
    answer = await quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="big"))
    return next(p.balance for p in answer.pools if p.pool_id == "integration")


def _charged(answer: bytes) -> int:
    """What an answered valid batch charged; every item must be a first-time, allowed charge."""
    decisions = quota_pb2.CheckAndConsumeBatchResponse.FromString(answer).decisions
    assert len(decisions) == 850
    assert all(d.allowed and not d.replayed for d in decisions)
    return sum(d.cost for d in decisions)


@pytest.mark.timeout(120)
async def test_calls_in_flight_across_channels_stay_in_the_budget(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """Many valid or refused 1 MiB calls on 8 channels: the budget, not RSS, gives way.

    A call over it gets the budget's RESOURCE_EXHAUSTED and charges nothing: sent again once
    the flood is over, its items are first-time charges, and the account lost exactly what the
    answered batches say they charged.
    """
    proc, target = server
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(8)]
    try:
        for channel in channels:
            await _ready(channel)
        assert _connections(proc.pid, int(target.rsplit(":", 1)[1])) == len(channels)
        quota = quota_pb2_grpc.QuotaServiceStub(channels[0])
        await admin_pb2_grpc.AdminServiceStub(channels[0]).CreateAccount(
            admin_pb2.CreateAccountRequest(account_id="big", plan_id="zite_team")
        )
        before = await _integration_balance(quota)
        valid = [_wide_batch(call) for call in range(128)]
        assert all(900_000 < len(v) < limits.MAX_RECEIVE_BYTES for v in valid)
        results = await _spread(channels, valid)
        peaks = [_status(proc.pid, "VmHWM")]
        assert peaks[-1] < LIMIT_MIB, f"peak RSS {peaks[-1]} MiB after 128 valid batches"
        answered = [r for r in results if isinstance(r, bytes)]
        busy = [i for i, r in enumerate(results) if _busy(r)]
        assert answered, "no valid batch was answered"
        assert busy, "no call was refused: the flood did not reach the budget"
        assert len(answered) + len(busy) == len(results), [
            (r.code(), r.details()) for r in results if isinstance(r, grpc.aio.AioRpcError)
        ]
        charged = sum(_charged(a) for a in answered)
        # 100,000 items of 10 bytes, just under the cap: refused by counting, or by the budget.
        tiny = quota_pb2.CheckAndConsumeRequest(account_id="a", action="x", quantity=1)
        many = quota_pb2.CheckAndConsumeBatchRequest(requests=[tiny] * 100_000).SerializeToString()
        assert len(many) < limits.MAX_RECEIVE_BYTES
        # A CheckAndConsume of 1 MB: more than one may be (64 KiB), but gRPC reads it all.
        big = _item(0, account_id="a" * 1_000_000).SerializeToString()
        for request, method, count in (
            (many, BATCH, 256),
            (big, "/creditgate.v1.QuotaService/CheckAndConsume", 1000),
        ):
            for result in await _spread(channels, [request] * count, method):
                assert isinstance(result, grpc.aio.AioRpcError)
                assert result.code() in {
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                }, result.details()
            peaks.append(_status(proc.pid, "VmHWM"))
            assert peaks[-1] < LIMIT_MIB, f"peak RSS {peaks[-1]} MiB after {count} refused calls"
        # The flood is over: a refused batch is answered now, every item charged for the
        # first time.
        again = await _spread(channels[:1], [valid[busy[0]]])
        assert isinstance(again[0], bytes), again[0]
        charged += _charged(again[0])
        assert before - await _integration_balance(quota) == charged
        peaks.append(_status(proc.pid, "VmHWM"))
    finally:
        for channel in channels:
            await channel.close()
    # The figures: peak RSS after each flood, and how many valid batches got in.
    print(f"8 channels: peak RSS {peaks} MiB, {len(answered)} of 128 valid batches answered")  # noqa: T201
    assert peaks[-1] < LIMIT_MIB, peaks
