"""Children die with the sidecar, and starting them runs no Python after fork.

(creditgate.wiring.lifeline)

Real processes: ``creditgate serve --embedded --demo`` with two server processes, SIGKILLed;
a redis-server restarted many times from a worker thread while gRPC threads are busy in the
same process (the drill's situation, where a ``preexec_fn`` made the forked child segfault).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from test_embedded_lifecycle import _gone, _kill_all, _until

from creditgate.wiring.embedded.redis import EmbeddedRedis
from served_kit import Served, redis_servers, server_children, sidecar_env

if TYPE_CHECKING:
    from pathlib import Path

RESTARTS = 40
CALLERS = 8


def test_sigkilled_sidecar_takes_its_other_server_processes_along(tmp_path: Path) -> None:
    """CREDITGATE_PROCESSES=2, the first process SIGKILLed: the second and redis-server exit."""
    served = Served(tmp_path, processes=2)
    served.start()
    assert served.process is not None
    parent = served.process.pid
    _until("the second server process starts", lambda: len(server_children(parent)) == 1)
    (child,) = server_children(parent)
    (redis_pid,) = redis_servers(served.redis_socket)
    served.process.send_signal(signal.SIGKILL)
    served.returncode = served.process.wait(timeout=5)
    try:
        _until("the second server process exits", lambda: _gone(child), 10.0)
        _until("the redis-server exits", lambda: _gone(redis_pid), 10.0)
    finally:
        _kill_all([child, redis_pid])


def test_a_server_process_whose_parent_is_gone_exits_at_once(tmp_path: Path) -> None:
    """The parent died before the child asked for its signal: the child sees it and exits."""
    not_the_parent = os.getpid() + 1_000_000
    done = subprocess.run(
        [sys.executable, "-m", "creditgate", "serve", "--listen", "127.0.0.1:0"],
        env=sidecar_env(tmp_path) | {"CREDITGATE_PARENT_PID": str(not_the_parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"creditgate: the first server process (pid {not_the_parent}) is gone\n"
    )


async def test_restarts_from_a_thread_under_grpc_load_all_succeed(tmp_path: Path) -> None:
    """40 SIGKILL + restart cycles from a worker thread while gRPC calls run: none fails.

    With a ``preexec_fn`` (Python run in the forked child of this threaded process) about one
    start in six died of SIGSEGV before redis-server ran.
    """
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    done = asyncio.Event()
    calls = 0

    async def call() -> None:
        nonlocal calls
        while not done.is_set():
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            calls += 1

    def restart() -> None:
        assert redis.pid is not None
        os.kill(redis.pid, signal.SIGKILL)
        redis.stop()
        redis.start()

    callers = [asyncio.create_task(call()) for _ in range(CALLERS)]
    started = time.monotonic()
    try:
        for _ in range(RESTARTS):
            await asyncio.to_thread(restart)
    finally:
        done.set()
        await asyncio.gather(*callers)
        await asyncio.to_thread(redis.stop)
        await channel.close()
        await server.stop(None)
    print(f"{RESTARTS} restarts in {time.monotonic() - started:.1f} s, {calls} calls")  # noqa: T201
    assert calls > RESTARTS, "the gRPC load ran during the restarts"
