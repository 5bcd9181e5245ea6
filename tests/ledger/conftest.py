"""Fixtures for the ledger tests: both backends, an engine with its worker, a random workload.

PostgreSQL: ``CREDITGATE_TEST_POSTGRES_URL`` if set (a fresh database is created for the session
and dropped after), else a private cluster started from ``initdb``/``pg_ctl`` on PATH in a temp
dir on a free port, else the PostgreSQL half is skipped with the reason printed, unless
``CREDITGATE_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import yaml

from cluster_kit import ON_CLUSTER
from creditgate.domain.catalog import Catalog, CatalogConfig, compile_catalog
from creditgate.domain.errors import CreditgateError
from creditgate.engine import Engine
from creditgate.engine.keys import KeySpace
from creditgate.ledger import LedgerStore, open_ledger
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.ledger.reconcile import Reconciler
from creditgate.worker import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from redis.asyncio import Redis as AsyncRedis

PG_URL_ENV = "CREDITGATE_TEST_POSTGRES_URL"
REQUIRE_ENV = "CREDITGATE_REQUIRE_POSTGRES"
SHARDS = 4
CATALOG = """
meters: {credit: "test credits"}
actions:
  use: {meter: credit, cost: 1}
  big: {meter: credit, cost: 5}
plans:
  mixed:
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 200, period: cycle}
      - {id: bonus, kind: grant, meter: credit}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.01"}}
  capped:
    flag_prices: {friend: {big: 1}}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 100, period: day, per_seat: true}
      - {id: bonus, kind: grant, meter: credit}
      - {id: payg, kind: payg, unit: usd, rates: {credit: "0.10"}, cap: "5.00", cap_min: "1.00",
         cap_max: "100.00", enabled: true, period: cycle}
  blocks:
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 50, period: cycle}
      - {id: overage, kind: overage, meter: credit, block_size: 100, block_price: "2.00",
         cap: "20.00", cap_min: 0, period: cycle}
  hosted:
    recurring:
      - {id: hosting, action: big, quantity: 12, period: day}
      - {id: support, action: use, quantity: 30, period: cycle, on_short: skip}
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 50, period: day}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.01"}}
"""
PLANS = ("mixed", "capped", "blocks")
TABLES = (
    "events, movements, requests, accounts, pool_balances, account_fields, holds, records, audit,"
    " purchases, webhook_endpoints, notifications, webhook_deliveries, webhook_attempts"
)


def catalog() -> Catalog:
    return compile_catalog(CatalogConfig.model_validate(yaml.safe_load(CATALOG)))


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass
class Postgres:
    """A PostgreSQL database for the session, and a way to take it away for a while."""

    url: str
    data_dir: Path | None = None  # private cluster: stop() / start() it
    run_as: list[str] = field(default_factory=list)
    admin_url: str = ""  # external server: where ALTER DATABASE runs from
    database: str = ""

    def _pg_ctl(self, *args: str) -> None:
        assert self.data_dir is not None
        pg_ctl = shutil.which("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(  # noqa: S603 - our own pg_ctl with our own arguments
            [*self.run_as, pg_ctl, "-D", str(self.data_dir), "-w", *args],
            check=True,
            capture_output=True,
        )

    async def outage_begin(self) -> None:
        """Stop the private server, or shut an external server's session database.

        Refusing new connections as well as cutting the open ones keeps a reconnect from hiding
        the outage.
        """
        if self.data_dir is not None:
            await asyncio.to_thread(self._pg_ctl, "stop", "-m", "fast")
            return
        await _admin(self.admin_url, f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        await _admin(
            self.admin_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608 - test-generated name
            f" WHERE datname = '{self.database}'",
        )

    async def outage_end(self) -> None:
        if self.data_dir is not None:
            await asyncio.to_thread(self._pg_ctl, "start", "-l", str(self.data_dir / "log"))
            return
        await _admin(self.admin_url, f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_cluster(tmp: Path) -> Postgres:
    initdb = shutil.which("initdb")
    if initdb is None or shutil.which("pg_ctl") is None:
        msg = "no CREDITGATE_TEST_POSTGRES_URL and no initdb/pg_ctl on PATH"
        raise LookupError(msg)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", user.pw_name, "--"]
    data = tmp / "data"
    subprocess.run(  # noqa: S603 - our own initdb with our own arguments
        [
            *run_as,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    conf = f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{tmp}'\n"
    conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
    with (data / "postgresql.conf").open("a") as f:
        f.write(conf)
    pg = Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", data, run_as)
    pg._pg_ctl("start", "-l", str(data / "log"))
    return pg


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin_sync(url: str, sql: str) -> None:
    """Run ``sql`` from synchronous code that may be inside the session's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(url, sql)).result()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL database for the session (see the module docstring for where)."""
    external = os.environ.get(PG_URL_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="cg-pg-"))
    pg: Postgres | None = None
    try:
        pg = Postgres(external) if external else _private_cluster(tmp)
    except (LookupError, subprocess.CalledProcessError, OSError) as exc:
        reason = f"PostgreSQL tests not run: {exc}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)")
        print(reason)  # noqa: T201 - the skip reason belongs in the output
        pytest.skip(reason)
    db = f"cg_test_{uuid.uuid4().hex[:10]}"
    _admin_sync(pg.url, f'CREATE DATABASE "{db}"')
    session = Postgres(_with_db(pg.url, db), pg.data_dir, pg.run_as, pg.url, db)
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):
            _admin_sync(pg.url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if pg.data_dir is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Ledger:
    """The backend under test: its URL, an open store, and (PostgreSQL) its server."""

    backend: str
    url: str
    store: LedgerStore
    pg: Postgres | None = None


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """An empty, migrated ledger on each backend in turn."""
    pg: Postgres | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
    else:
        pg = request.getfixturevalue("postgres")
        url = pg.url
        await _admin(url, f"DROP TABLE IF EXISTS {TABLES}, schema_version")
    store = await open_ledger(url, migrate=True)
    try:
        yield Ledger(request.param, url, store, pg)
    finally:
        with contextlib.suppress(Exception):
            await store.close()


# --- engine, worker, workload ------------------------------------------------------------


@pytest.fixture
def keys() -> KeySpace:
    return KeySpace("cg", SHARDS)


def make_worker(redis: AsyncRedis, store: LedgerStore, keys: KeySpace, **kw: Any) -> Worker:  # noqa: ANN401
    kw.setdefault("batch", 200)
    kw.setdefault("block_ms", 0)
    kw.setdefault("claim_idle_ms", 1000)
    kw.setdefault("per_stream", ON_CLUSTER)  # a cluster's shard streams live on several nodes
    return Worker(redis, LedgerConsumer(store), keys, **kw)


@dataclass
class Workload:
    """Random operations on an engine, counting what succeeded by the event kind it makes."""

    engine: Engine
    rng: random.Random
    accounts: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    charges: list[tuple[str, str]] = field(default_factory=list)
    _n: int = 0

    def _count(self, kind: str) -> None:
        self.expected[kind] = self.expected.get(kind, 0) + 1

    def _id(self, p: str) -> str:
        self._n += 1
        return f"{p}{self._n}"

    async def create(self, n: int) -> None:
        for i in range(n):
            a = f"acct{len(self.accounts)}"
            self.plans[a] = PLANS[i % len(PLANS)]
            await self.engine.create_account(a, self.plans[a])
            self._count("account")
            self.accounts.append(a)
        await asyncio.gather(*(self.grant(a) for a in self.accounts[-n:]))

    async def grant(self, a: str) -> None:
        plan = self.plans[a]
        pool = {"mixed": self.rng.choice(["bonus", "wallet"]), "capped": "bonus"}.get(plan)
        if pool is not None:
            await self.engine.grant(a, pool, self.rng.randint(1, 300) * 1_000_000, self._id("g"))
            self._count("grant")

    async def one(self) -> None:
        """One random operation (two for a reservation that is then settled or released)."""
        a = self.rng.choice(self.accounts)
        roll = self.rng.random()
        try:
            if roll < 0.55:
                d = await self.engine.consume(
                    a, self.rng.choice(["use", "big"]), self.rng.randint(1, 40), {}, self._id("c")
                )
                if d.allowed:
                    self._count("charge")
                    self.charges.append((a, d.request_id))
            elif roll < 0.8:
                await self._reservation(a)
            elif roll < 0.9 and self.charges:
                acct, rid = self.charges.pop(self.rng.randrange(len(self.charges)))
                await self.engine.refund(acct, rid, self._id("f"), self.rng.randint(0, 2))
                self._count("refund")
            elif roll < 0.97:
                await self.grant(a)
            else:
                await self.engine.advance_clock(a, seconds=self.rng.randint(3600, 40 * 86400))
                self._count("clock")
        except CreditgateError:
            pass  # refused (nothing left to refund...): no event expected

    async def _reservation(self, a: str) -> None:
        d = await self.engine.reserve(a, "use", self.rng.randint(1, 30), {}, self._id("h"), 600)
        if not d.allowed:
            return
        self._count("hold")
        if self.rng.random() < 0.6:
            await self.engine.settle(a, d.request_id, self.rng.randint(0, 40))
            self._count("settle")
        elif (await self.engine.release(a, d.request_id)).released:
            self._count("release")

    async def run(self, n: int, concurrency: int = 100) -> None:
        for start in range(0, n, concurrency):
            await asyncio.gather(*(self.one() for _ in range(min(concurrency, n - start))))


@pytest.fixture
def engine(redis: AsyncRedis, keys: KeySpace) -> Engine:
    """An engine on the per-test Redis with frozen per-account test clocks."""
    return Engine(redis, catalog(), keys=keys, test_clock=True)


@pytest.fixture
def workload(engine: Engine) -> Workload:
    return Workload(engine, random.Random(1234))  # noqa: S311 - test data


async def assert_consistent(engine: Engine, ledger: Ledger, workload: Workload | None) -> None:
    """Reconcile is clean, balances agree, movements add up, one event per success."""
    rec = Reconciler(engine.redis, ledger.store, engine.keys)
    report = await rec.check(progress=False)
    assert report == {}, "\n".join(str(d) for ds in report.values() for d in ds)
    for a in await ledger.store.accounts():
        state = await engine.balance(a)
        led = await ledger.store.pool_balances(a)
        sums = await ledger.store.movement_sums(a)
        for p in state.pools:
            if p.kind == "payg":
                continue  # its remaining depends on the cap: compared as mirror fields above
            assert led.get(p.pool_id, 0) == p.balance, (a, p.pool_id)
            assert sums.get(p.pool_id, 0) == p.balance, (a, p.pool_id)
    if workload is not None:
        counts = await ledger.store.event_counts()
        for kind, n in workload.expected.items():
            got = counts.get(kind, 0)
            assert got == n, f"{kind}: {got} ledger events for {n} successful operations"
