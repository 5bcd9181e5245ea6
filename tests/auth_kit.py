"""A sidecar behind bearer tokens, for the auth and audit tests (tests/ is on sys.path).

One token per role (named after it, '-' for '_') and ``service-x``, a service token limited to
account acct-x; the tokens file is the test's to rewrite, and its store's clock the test's to move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from creditgate.auth.roles import ROLES
from creditgate.auth.tokens import TokenStore, create_token
from creditgate.engine import Engine
from creditgate.notify import Notifications
from creditgate.payments.purchases import Purchases
from creditgate.transport.audit import Auditor
from creditgate.transport.guard import Guard
from creditgate.v1 import admin_pb2_grpc, quota_pb2_grpc
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.catalog import Catalog
    from creditgate.ledger import LedgerStore
    from creditgate.payments.provider import PaymentProvider


@dataclass
class Clock:
    """The tokens store's clock: tests move it instead of sleeping through the reload check."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Secured:
    engine: Engine
    quota: quota_pb2_grpc.QuotaServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    channel: grpc.aio.Channel
    tokens_file: Path
    store: TokenStore
    clock: Clock
    target: str
    tokens: dict[str, str] = field(default_factory=dict)  # role (or name) -> token

    def auth(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[who]}"),)


async def secured_sidecar(
    redis: AsyncRedis,
    catalog: Catalog,
    tmp_path: Path,
    ledger: LedgerStore | None = None,
    provider: PaymentProvider | None = None,  # None: the approving test provider
) -> AsyncIterator[Secured]:
    path = tmp_path / "tokens.json"
    tokens = {role: create_token(path, role.replace("_", "-"), role) for role in ROLES}
    tokens["service-x"] = create_token(path, "service-x", "service", ("acct-x",))
    clock = Clock()
    store = TokenStore(path, clock=clock)
    engine = Engine(redis, catalog, test_clock=True)
    server, _health, port = await build_server(
        engine,
        "127.0.0.1:0",
        guard=Guard(store),
        auditor=Auditor(ledger),
        purchases=Purchases(engine, provider, ledger) if provider else None,
        notifications=Notifications.of(ledger),
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Secured(
            engine,
            quota_pb2_grpc.QuotaServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            channel,
            path,
            store,
            clock,
            f"127.0.0.1:{port}",
            tokens,
        )
    finally:
        await channel.close()
        await server.stop(None)
