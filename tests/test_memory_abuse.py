"""Issue 17 item 5: one client cannot exhaust the sidecar's memory.

A real ``python -m creditgate serve`` on the test Redis gets the abuse that took it to 832 MiB:
CheckAndConsumeBatch calls of 100,000 items (2.8 MB), 16 and then 64 in flight, and batches
that fit under the message cap but hold too many items or attributes. Its peak RSS (VmHWM in
/proc/PID/status) must stay under the 256 MiB limit of deploy/kubernetes/sidecar.yaml, the
abusive calls must get a clear RESOURCE_EXHAUSTED or INVALID_ARGUMENT, and valid batches must
still be answered.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.v1 import admin_pb2, admin_pb2_grpc, quota_pb2, quota_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio import Redis as AsyncRedis

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 256  # deploy/kubernetes/sidecar.yaml's memory limit
# 28 bytes on the wire, as in the 2.8 MB batch of 100,000 items.
TINY = quota_pb2.CheckAndConsumeRequest(account_id="acct-1", action="zite.email.send", quantity=1)


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
    return quota_pb2.CheckAndConsumeRequest(
        account_id="big", action="zite.email.send", quantity=1, request_id=f"r{i}", **fields
    )


async def _flood(
    channel: grpc.aio.Channel, request: bytes, in_flight: int
) -> list[grpc.aio.AioRpcError]:
    """``in_flight`` copies of a pre-encoded batch at once; every one must fail."""
    send = channel.unary_unary("/creditgate.v1.QuotaService/CheckAndConsumeBatch")
    results = await asyncio.gather(
        *(send(request, timeout=60) for _ in range(in_flight)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == in_flight, [r for r in results if r not in errors]
    return errors


@pytest.mark.timeout(180)
async def test_oversized_batches_do_not_exhaust_memory(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """100,000-item batches, 16 then 64 in flight: refused, and peak RSS stays under 256 MiB."""
    proc, target = server
    options = [("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
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
                "the request is not a valid message: a batch holds at most 1000 requests, got 30000"
            )
        wide = quota_pb2.CheckAndConsumeBatchRequest(
            requests=[_item(0, attributes={f"k{i}": "" for i in range(60_000)})]
        ).SerializeToString()
        for error in await _flood(channel, wide, 64):
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").endswith(
                "requests[0].attributes: at most 32 entries, got 60000"
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
