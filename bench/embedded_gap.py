"""Why an outside run of `creditgate serve --embedded` scored below `make bench` (issue 21).

    .venv/bin/python bench/embedded_gap.py [--runs 5] [--seconds 4] [--processes 2]

Four servers, each driven in turns by h2load at 64 in flight (``-c4 -m16``, the outside run's
settings), every sidecar with ``CREDITGATE_PROCESSES`` server processes:

- ``floor``: bench/floor.py, the bare grpc.aio server;
- ``ledger_off``: `creditgate serve` on a Redis without persistence, ledger off (what
  `make bench` measured before issue 21);
- ``worker_on``: the same with the ledger worker on in its own process (SQLite);
- ``embedded``: as `serve --embedded` runs: Redis with ``appendfsync always``, the worker on,
  /metrics on.

Ratios to the floor are taken pair by pair (run i against run i); prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import loadgen
import tools
from baselines import ATTRS
from sidecar import PATH, processes_of, provision, sidecar_env

from creditgate.v1 import quota_pb2
from creditgate.wiring.embedded.redis import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--processes", type=int, default=2)
    opts = parser.parse_args()
    if "h2load" in loadgen.ensure_tools(("h2load",)):
        sys.exit("h2load is needed (apt-get install nghttp2-client)")
    body = loadgen.grpc_body(
        quota_pb2.CheckAndConsumeRequest(
            account_id="bench-hot", action="agent.message", quantity=1, attributes=ATTRS
        )
    )
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        plain = stack.enter_context(EmbeddedRedis(data_dir=Path(tmp) / "plain"))
        aof = stack.enter_context(EmbeddedRedis(data_dir=Path(tmp) / "aof", appendonly=True))
        for rd in (plain, aof):
            asyncio.run(provision(rd.url, 0))
        floor_port = tools.free_port()
        floor = stack.enter_context(
            tools.process(
                [
                    sys.executable,
                    str(tools.ROOT / "bench" / "floor.py"),
                    str(floor_port),
                    "--uvloop",
                ]
            )
        )
        servers: dict[str, tuple[str, list[int]]] = {}
        tools.wait_ready(f"127.0.0.1:{floor_port}")
        servers["floor"] = (f"127.0.0.1:{floor_port}", [floor.pid])
        worker = {
            "CREDITGATE_RUN_WORKER": "true",
            "CREDITGATE_MIGRATE_ON_START": "true",
        }
        configs = {
            "ledger_off": (plain.url, {}),
            "worker_on": (
                plain.url,
                worker | {"CREDITGATE_LEDGER_URL": f"sqlite:///{tmp}/worker_on.db"},
            ),
            "embedded": (
                aof.url,
                worker
                | {
                    "CREDITGATE_LEDGER_URL": f"sqlite:///{tmp}/embedded.db",
                    "CREDITGATE_METRICS_PORT": str(tools.free_port()),
                },
            ),
        }
        cmd = [str(Path(sys.executable).parent / "creditgate"), "serve"]
        for name, (url, extra) in configs.items():
            target = f"127.0.0.1:{tools.free_port()}"
            env = sidecar_env(url, target) | extra | {"CREDITGATE_PROCESSES": str(opts.processes)}
            proc = stack.enter_context(tools.process(cmd, env))
            tools.wait_serving(target)
            servers[name] = (target, processes_of(proc.pid, opts.processes))
        loads: dict[str, list[loadgen.Load]] = {name: [] for name in servers}
        for _ in range(opts.runs):
            for name, (target, pids) in servers.items():
                loads[name].append(
                    loadgen.h2load(
                        target, PATH, body, clients=4, streams=16, seconds=opts.seconds, pids=pids
                    )
                )
    out = {
        name: {
            "rps": round(statistics.median(x.rps for x in runs)),
            "ratio": round(
                statistics.median(s.rps / f.rps for f, s in zip(loads["floor"], runs, strict=True)),
                3,
            ),
            "idle_process_runs": sum(1 for x in runs if x.idle_processes),
        }
        for name, runs in loads.items()
    }
    for name, v in out.items():
        print(f"{name:>10}: {v['rps']:>7,} req/s, {v['ratio']:.2f}x the floor", file=sys.stderr)
    print(json.dumps(out | {"runs": opts.runs, "processes": opts.processes}))


if __name__ == "__main__":
    main()
