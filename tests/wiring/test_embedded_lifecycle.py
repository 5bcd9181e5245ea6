"""The embedded redis-server lives and dies with its sidecar (issue 17, item 2).

Real processes throughout: ``creditgate serve --embedded --demo`` subprocesses (test_cli's
``Served``), SIGKILLed; a stale redis-server orphaned on the data dir; the embedded redis-server
SIGKILLed under a running sidecar.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis import Redis

from creditgate.v1 import quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis, EmbeddedRedisError, find_redis_server
from served_kit import Served, redis_servers

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT_SECONDS = 15.0
ACCOUNT, ACTION = "demo-zite-pro", "zite.email.send"


def _until(what: str, check: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except OSError:
        return True


def _charge(target: str, request_id: str) -> quota_pb2.Decision:
    with grpc.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        request = quota_pb2.CheckAndConsumeRequest(
            account_id=ACCOUNT, action=ACTION, quantity=1, request_id=request_id
        )
        return stub.CheckAndConsume(request, timeout=5)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_sigkilled_sidecar_takes_its_redis_server_along(tmp_path: Path) -> None:
    """SIGKILL of the sidecar: its redis-server goes too, and a restart finds the data again."""
    first = Served(tmp_path)
    first.start()
    assert first.process is not None
    (redis_pid,) = redis_servers(first.redis_socket)
    decision = _charge(first.target, "before-kill")
    assert decision.allowed
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=5)
    first.returncode = first.process.returncode
    try:
        _until("the orphaned redis-server exits", lambda: _gone(redis_pid), 5.0)
        assert redis_servers(first.redis_socket) == []
    finally:
        _kill_all(redis_servers(first.redis_socket))
    second = Served(tmp_path)
    second.start()
    try:
        again = _charge(second.target, "before-kill")
        assert again.replayed, "the charge made before the kill came back from the AOF"
        assert again.balances == decision.balances
    finally:
        second.stop()
    assert second.returncode == 0, second.log_tail()


def _orphan_redis(data_dir: Path) -> int:
    """A redis-server on ``data_dir`` whose parent has exited, as a killed old sidecar leaves."""
    data_dir.mkdir(parents=True)
    socket_path = data_dir / "redis.sock"
    command = (
        f"'{find_redis_server()}' --port 0 --unixsocket '{socket_path}' --unixsocketperm 700 "
        f"--dir '{data_dir}' --daemonize no --save '' --appendonly yes --appendfsync everysec "
        f">/dev/null 2>&1 </dev/null & echo $!"
    )
    out = subprocess.run(  # noqa: S603 - fixed command on paths this test made
        ["/bin/sh", "-c", command], capture_output=True, text=True, check=True
    )
    pid = int(out.stdout.strip())

    def answers() -> bool:
        with contextlib.suppress(Exception), Redis(unix_socket_path=str(socket_path)) as client:
            return bool(client.ping())
        return False

    _until("the stale redis-server answers", answers, 10.0)
    return pid


def test_a_stale_redis_server_on_the_data_dir_is_stopped_and_named(tmp_path: Path) -> None:
    """A redis-server orphaned on the data dir is stopped at start, with its pid in the log.

    What it held (written to its AOF) is there after the start.
    """
    served = Served(tmp_path)
    stale = _orphan_redis(served.redis_socket.parent)
    try:
        with Redis(unix_socket_path=str(served.redis_socket)) as client:
            client.set("written-by-the-stale-server", "kept")
        served.start()
        try:
            assert _gone(stale)
            log = served.log.read_text()
            assert f"stopping a stale redis-server (pid {stale}" in log
            with Redis(unix_socket_path=str(served.redis_socket)) as client:
                assert client.get("written-by-the-stale-server") == b"kept"
        finally:
            served.stop()
        assert served.returncode == 0, served.log_tail()
    finally:
        _kill_all([stale])


def test_a_redis_server_a_running_sidecar_owns_is_refused_with_both_pids(
    tmp_path: Path,
) -> None:
    """Two sidecars on one data dir: the second is refused, told whose server it is."""
    served = Served(tmp_path)
    served.start()
    assert served.process is not None
    try:
        (redis_pid,) = redis_servers(served.redis_socket)
        with pytest.raises(EmbeddedRedisError) as excinfo:
            EmbeddedRedis(served.redis_socket.parent, appendonly=True).start()
        message = str(excinfo.value)
        assert f"redis-server pid {redis_pid}" in message
        assert f"running sidecar pid {served.process.pid}" in message
        assert redis_servers(served.redis_socket) == [redis_pid], "it was left alone"
    finally:
        served.stop()


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
        except grpc.RpcError:
            return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def test_a_killed_embedded_redis_is_restarted_from_its_aof_and_reaped(tmp_path: Path) -> None:
    """SIGKILL of the embedded redis-server: it is reaped, restarted, and lost no charge."""
    served = Served(tmp_path)
    served.start()
    try:
        (old,) = redis_servers(served.redis_socket)
        charged = [_charge(served.target, f"pre-{i}") for i in range(20)]
        assert all(d.allowed for d in charged)
        os.kill(old, signal.SIGKILL)
        started = time.monotonic()
        _until(
            "a new redis-server serves the socket",
            lambda: redis_servers(served.redis_socket) not in ([], [old]),
        )
        _until("the sidecar serves again", lambda: _serving(served.target))
        recovered = time.monotonic() - started
        assert not Path(f"/proc/{old}").exists(), "the dead redis-server was reaped"
        replays = [_charge(served.target, f"pre-{i}") for i in range(20)]
        assert all(r.replayed for r in replays)
        assert replays[-1].balances == charged[-1].balances
        fresh = _charge(served.target, "after-restart")
        assert fresh.allowed
        assert not fresh.replayed
        assert "restarting it from its AOF" in served.log.read_text()
        print(f"embedded redis-server SIGKILLed: serving again after {recovered:.2f} s")  # noqa: T201
    finally:
        served.stop()
    assert served.returncode == 0, served.log_tail()
