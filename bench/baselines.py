"""The baselines `make bench` measures beside creditgate.

The Redis ceiling of creditgate's own script, a PostgreSQL row-lock debit, and the EVALSHA
counters both read from Redis; the benchmark's catalog and request attributes.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess

import loadgen
import tools
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from creditgate.domain.catalog import load_catalog
from creditgate.domain.results import Decision
from creditgate.engine import Engine, KeySpace
from creditgate.engine.scripts import script_source

ATTRS = {"model": "pro", "feature": "agents"}
CATALOG = tools.ROOT / "examples" / "demo.yaml"
# redis-benchmark reads -r with atoi() into an int: 10**12 wrapped to a negative number, which it
# treats as 0, so every __rand_int__ became 000000000000 and all but the first call were replays.
RAND_SPACE = 10**9


def redis_ceiling(url: str, socket_path: str, accounts: int, runs: int) -> dict[str, float]:
    """EVALSHA of the consume script with the sidecar's own arguments (fresh request ids).

    Each figure is the median of ``runs`` redis-benchmark runs. redis-benchmark draws every
    ``__rand_int__`` separately, so the request id differs from call to call; in the spread
    case the account hash and the idempotency record are drawn separately too (same cost).
    Every run checks that the calls really charged (see ``fresh_fraction``).
    """

    async def command(account: str) -> list[str]:
        redis = Redis.from_url(url)
        engine = Engine(redis, load_catalog(CATALOG), keys=KeySpace("cg", 1))
        sha = await redis.script_load(script_source("consume"))
        call = engine.quota.prepare(
            account,
            "agent.message",
            1,
            ATTRS,
            "b__rand_int__",
            dry_run=False,
            hold_ttl_ms=None,
        )
        plan = engine.catalog.plan("agent_team")
        assert plan is not None
        assert not isinstance(call, Decision)
        keys, args = call.keys(), call.argv(plan)
        await redis.aclose()
        return ["EVALSHA", sha, str(len(keys)), *keys, *map(str, args)]

    hot = asyncio.run(command("bench-hot"))
    # -r bounds every __rand_int__ by the account count here: enough of them make the request id
    # that 10**12 ids can be drawn.
    tokens = math.ceil(12 / math.log10(max(accounts, 10)))
    spread = [
        part.replace("acct-000000000000", "acct-__rand_int__").replace(
            "b__rand_int__", "b" + "__rand_int__" * tokens
        )
        for part in asyncio.run(command("acct-000000000000"))
    ]
    cases = {
        "hot": (hot, 1, RAND_SPACE),
        "hot_pipelined": (hot, 16, RAND_SPACE),
        "spread_pipelined": (spread, 16, accounts),
    }
    results: dict[str, float] = {}
    for case, (name, (cmd, pipeline, keyspace)) in enumerate(cases.items()):
        rates, fresh, script_us = [], [], []
        for run in range(runs):
            # redis-benchmark seeds random() with time ^ pid, which two runs can share: a run
            # of its own in every request id keeps one run from replaying another's ids.
            ids = [part.replace("b__rand_int__", f"b{case}{run}x__rand_int__") for part in cmd]
            before, timed = consume_counts(socket_path), evalsha_time(socket_path)
            rates.append(
                loadgen.redis_benchmark(socket_path, ids, pipeline=pipeline, keyspace=keyspace)
            )
            fresh.append(fresh_fraction(before, consume_counts(socket_path)))
            script_us.append(per_call(timed, evalsha_time(socket_path)))
        if min(fresh) < 0.99:
            msg = f"redis-benchmark {name}: only {min(fresh):.1%} of the calls charged"
            raise RuntimeError(msg)
        results[name] = statistics.median(rates)
        results[f"{name}_fresh"] = min(fresh)
        results[f"{name}_script_us"] = statistics.median(script_us)
    return results


def evalsha_time(socket_path: str) -> tuple[int, int]:
    """(EVALSHA calls, microseconds redis-server spent in them) so far."""
    with SyncRedis(unix_socket_path=socket_path) as redis:
        stats = redis.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def per_call(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Microseconds per EVALSHA between two ``evalsha_time`` readings."""
    calls = after[0] - before[0]
    return (after[1] - before[1]) / calls if calls else 0.0


def consume_counts(socket_path: str) -> tuple[int, int]:
    """(EVALSHA calls, XADD calls) so far, from redis-server's own command statistics."""
    with SyncRedis(unix_socket_path=socket_path) as redis:
        stats = redis.info("commandstats")
    return (
        int(stats.get("cmdstat_evalsha", {}).get("calls", 0)),
        int(stats.get("cmdstat_xadd", {}).get("calls", 0)),
    )


def fresh_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the EVALSHA calls between two counts that charged.

    Each charge appends one event to the stream; a replayed request id appends none.
    """
    calls = after[0] - before[0]
    return (after[1] - before[1]) / calls if calls else 0.0


def postgres_baseline(url: str | None, runs: int) -> dict[str, float | None]:
    if not url:
        return {"hot": None, "spread": None}
    rows = 100_000
    setup = (
        "DROP TABLE IF EXISTS cg_bench_accounts;"
        "CREATE TABLE cg_bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
        "INSERT INTO cg_bench_accounts SELECT g, 1000000000000 "
        f"FROM generate_series(1, {rows}) g;"
    )
    subprocess.run(["psql", "-q", url, "-c", setup], check=True, capture_output=True)
    subprocess.run(
        ["psql", "-q", url, "-c", "VACUUM ANALYZE cg_bench_accounts"],
        check=True,
        capture_output=True,
    )
    debit = "UPDATE cg_bench_accounts SET balance = balance - 1 WHERE id = :id AND balance >= 1;\n"
    hot = [loadgen.pgbench(url, "\\set id 1\n" + debit, clients=16, seconds=4) for _ in range(runs)]
    spread = [
        loadgen.pgbench(url, f"\\set id random(1, {rows})\n" + debit, clients=16, seconds=4)
        for _ in range(runs)
    ]
    subprocess.run(
        ["psql", "-q", url, "-c", "DROP TABLE cg_bench_accounts"], check=False, capture_output=True
    )
    return {"hot": statistics.median(hot), "spread": statistics.median(spread)}


def find_postgres(explicit: str | None) -> str | None:
    for url in filter(None, [explicit, "postgresql://postgres@127.0.0.1:5432/test"]):
        ok = subprocess.run(["psql", url, "-c", "select 1"], capture_output=True, check=False)
        if ok.returncode == 0:
            return url
    return None
