"""Where creditgate's distance from the floor comes from: one server per ingredient, one run.

Run: .venv/bin/python bench/decompose.py [--burn 3000,8000] [--runs 3] [--levels 1,64]. Beside
the floor, floor + PING and the sidecar, it serves (bench/floor.py):

- floor + burn N: the floor waiting for one EVALSHA of a script that counts to N, sent with
  consume's 5 keys and 61 arguments; choose N so that its time inside Redis (the script µs
  column, from INFO commandstats) matches the sidecar's;
- steps + burn N: the same plus creditgate's own Python per request (validation, the request's
  shape and RESP, the plan and account caches), answering the constant Decision.

If steps + burn matches floor + burn, creditgate's Python costs little; if the sidecar falls
below a burn floor whose script takes as long as consume, the difference is what the real script
does to the machine beyond its own time. The event loop column is the CPU time of each server's
main thread alone (grpc's poller and event-engine threads left out), and in brackets how busy
that thread was: near 100% the server is bound by its one event loop. Prints a markdown table;
not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import loadgen
import tools
from baselines import ATTRS, evalsha_time, per_call
from sidecar import LEVELS, PATH, provision, sidecar_env  # LEVELS: the same shapes as make bench

from creditgate.v1 import quota_pb2
from creditgate.wiring.embedded.redis import EmbeddedRedis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burn", default="3000,8000", help="loop counts, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--levels", default="1,64", help="in flight, among 1, 16, 64, 256")
    opts = parser.parse_args()
    if "h2load" in loadgen.ensure_tools():
        print("h2load is needed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    levels = {int(x): LEVELS[int(x)] for x in opts.levels.split(",")}
    burns = [int(x) for x in opts.burn.split(",")]
    floor = [sys.executable, str(tools.ROOT / "bench" / "floor.py")]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp) / "redis") as rd:
        socket_path = rd.url.removeprefix("unix://").split("?")[0]
        asyncio.run(provision(rd.url, 0))
        redis = ["--uvloop", "--redis", rd.url]
        commands = {
            "floor": [*floor, "{port}", "--uvloop"],
            "floor + PING": [*floor, "{port}", *redis],
        }
        for n in burns:
            commands[f"floor + burn {n}"] = [*floor, "{port}", *redis, "--burn", str(n)]
        commands[f"steps + burn {burns[-1]}"] = [*commands[f"floor + burn {burns[-1]}"], "--steps"]
        sidecar = [str(Path(sys.executable).parent / "creditgate"), "serve"]
        body = loadgen.grpc_body(
            quota_pb2.CheckAndConsumeRequest(
                account_id="bench-hot", action="agent.message", quantity=1, attributes=ATTRS
            )
        )
        with contextlib.ExitStack() as stack:
            servers = {}
            for name, template in commands.items():
                port = tools.free_port()
                args = [a.replace("{port}", str(port)) for a in template]
                servers[name] = (f"127.0.0.1:{port}", stack.enter_context(tools.process(args)))
            target = f"127.0.0.1:{tools.free_port()}"
            servers["creditgate"] = (
                target,
                stack.enter_context(tools.process(sidecar, sidecar_env(rd.url, target))),
            )
            tools.wait_serving(target)
            for address, _ in servers.values():
                tools.wait_ready(address)
            print(
                "| in flight | server | req/s | / floor | p50 ms | p50 / floor | script µs "
                "| server CPU µs/req | event loop CPU µs/req (busy) | Redis CPU µs/req |"
            )
            print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for inflight, (conns, streams) in levels.items():
                loads: dict[str, list[loadgen.Load]] = {name: [] for name in servers}
                script: dict[str, list[float]] = {name: [] for name in servers}
                for _ in range(opts.runs):
                    for name, (address, proc) in servers.items():
                        before = evalsha_time(socket_path)
                        loads[name].append(
                            loadgen.h2load(
                                address,
                                PATH,
                                body,
                                clients=conns,
                                streams=streams,
                                seconds=opts.seconds,
                                pids=[proc.pid],
                                redis_pid=rd.pid,
                            )
                        )
                        script[name].append(per_call(before, evalsha_time(socket_path)))
                for name, runs in loads.items():
                    pairs = list(zip(runs, loads["floor"], strict=True))
                    m = loadgen.median_load(runs)
                    loop_busy = m.loop_us_per_request * m.rps / 1e4  # µs/req x req/s, in %
                    print(
                        f"| {inflight} | {name} | {m.rps:,.0f} "
                        f"| {statistics.median(a.rps / f.rps for a, f in pairs):.2f} "
                        f"| {m.p50_ms:.2f} "
                        f"| {statistics.median(a.p50_ms / f.p50_ms for a, f in pairs):.2f} "
                        f"| {statistics.median(script[name]):.0f} "
                        f"| {m.cpu_us_per_request:.0f} "
                        f"| {m.loop_us_per_request:.0f} ({loop_busy:.0f}%) "
                        f"| {m.redis_us_per_request:.0f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
