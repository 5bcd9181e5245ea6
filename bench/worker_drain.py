"""Ledger worker throughput: events produced beforehand through the engine, then drained.

    .venv/bin/python bench/worker_drain.py [--events 50000] [--backend sqlite|postgres|both]

Charges go through ``Engine.consume_many`` (public API) on ``--accounts`` accounts over the
default 16 shards; the worker (``creditgate.worker.Worker`` with the ``LedgerConsumer``, as
``creditgate worker`` runs it) then drains them in burst mode. SQLite is a file in a temp dir
with the shipped pragmas (WAL, synchronous=FULL); PostgreSQL is ``--postgres URL`` or a private
cluster started from initdb/pg_ctl (fsync on: the figure includes the commit's flush). Prints
events/s per backend, and one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import tools
from baselines import ATTRS, CATALOG
from redis.asyncio import Redis

from creditgate.domain.catalog import load_catalog
from creditgate.domain.money import MICRO
from creditgate.engine import Engine, KeySpace
from creditgate.ledger import open_ledger
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.worker.lanes import Lanes

if TYPE_CHECKING:
    from collections.abc import Iterator

SHARDS = 16  # Settings.shards default


@contextmanager
def private_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb/pg_ctl on PATH) on a free port; yields its URL."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        msg = "no initdb/pg_ctl on PATH (pass --postgres URL)"
        raise LookupError(msg)
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", user.pw_name, "--"]
    data = tmp / "data"
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = tools.free_port()
    with (data / "postgresql.conf").open("a") as f:
        f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n")
        f.write(f"unix_socket_directories = '{tmp}'\n")
    ctl = [*run_as, pg_ctl, "-D", str(data), "-w"]
    subprocess.run([*ctl, "start", "-l", str(data / "log")], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "stop", "-m", "immediate"], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


async def produce(url: str, events: int, accounts: int, keys: KeySpace) -> float:
    """``events`` charges through the engine (one event each); returns charges/s."""
    redis = Redis.from_url(url)
    engine = Engine(redis, load_catalog(CATALOG), keys=keys)
    names = [f"drain-{i:06d}" for i in range(accounts)]
    for name in names:
        await engine.create_account(name, "agent_team")
        await engine.grant(name, "bonus", 10**9 * MICRO, f"g-{name}")
    start = time.perf_counter()
    done = 0
    while done < events:
        n = min(500, events - done)
        batch = [
            (names[(done + i) % accounts], "agent.message", 1, ATTRS, f"r{done + i}", False)
            for i in range(n)
        ]
        results = await engine.consume_many(batch)
        bad = [r for r in results if not getattr(r, "allowed", False)]
        if bad:
            msg = f"a bench charge was refused: {bad[0]!r}"
            raise RuntimeError(msg)
        done += n
    rate = events / (time.perf_counter() - start)
    await redis.aclose()
    return rate


async def drain(
    url: str, ledger_url: str, keys: KeySpace, batch: int, lanes: int
) -> tuple[int, float, float]:
    """Burst-drain everything into a fresh ledger; (events applied, seconds, CPU seconds)."""
    redis = Redis.from_url(url)
    store = await open_ledger(ledger_url, migrate=True)
    worker = Lanes(redis, LedgerConsumer(store), keys, lanes, batch=batch, name="bench")
    start, cpu = time.perf_counter(), time.process_time()  # process_time: every thread
    applied = await worker.drain()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    await store.close()
    await redis.aclose()
    return applied, seconds, cpu


def measure(backend: str, ledger_url: str, opts: argparse.Namespace) -> dict[str, float]:
    keys = KeySpace("cg", SHARDS)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp) / "r") as rd:
        produced = asyncio.run(produce(rd.url, opts.events, opts.accounts, keys))
        url = ledger_url or f"sqlite:///{tmp}/ledger.db"
        applied, seconds, cpu = asyncio.run(drain(rd.url, url, keys, opts.batch, opts.lanes))
    # Account creation and grants are events too; the rate counts every event applied.
    rate = applied / seconds
    print(
        f"{backend}: {applied} events in {seconds:.2f} s = {rate:,.0f} events/s,"
        f" {cpu / applied * 1e6:.0f} us worker CPU per event"
        f" (produced at {produced:,.0f} charges/s)",
        file=sys.stderr,
    )
    return {
        "events_per_s": rate,
        "events": applied,
        "worker_cpu_us_per_event": cpu / applied * 1e6,
        "produce_per_s": produced,
    }


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--batch", type=int, default=0, help="worker batch (default: Settings)")
    parser.add_argument("--lanes", type=int, default=1, help="workers over the shards")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres", help="PostgreSQL URL (default: a private cluster)")
    parser.add_argument("--runs", type=int, default=1)
    return parser.parse_args()


def run(opts: argparse.Namespace) -> dict[str, object]:
    """Medians of ``opts.runs`` drains per backend."""
    from creditgate.wiring.settings import Settings  # noqa: PLC0415

    opts.batch = opts.batch or Settings.model_fields["worker_batch"].default
    out: dict[str, object] = {"events": opts.events, "batch": opts.batch, "lanes": opts.lanes}
    if opts.backend in ("sqlite", "both"):
        out["sqlite"] = [measure("sqlite", "", opts) for _ in range(opts.runs)]
    if opts.backend in ("postgres", "both"):
        if opts.postgres:
            out["postgres"] = [measure("postgres", opts.postgres, opts) for _ in range(opts.runs)]
        else:
            with private_postgres() as url:
                runs = []
                for i in range(opts.runs):
                    db = f"drain{i}"
                    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {db}"], check=True)
                    runs.append(measure("postgres", url.rsplit("/", 1)[0] + f"/{db}", opts))
                out["postgres"] = runs
    return out


if __name__ == "__main__":
    print(json.dumps(run(options())))
