"""A sidecar with a ledger, bearer tokens and CreditsService, for the credits view's tests.

The plan ``shop`` is ShingleAI-like: a token allowance, then a USD balance with seed 003's
purchase limits and a $5 default low-balance threshold. ``Env.sync`` lets the ledger worker
apply everything written so far, as the worker would a moment later.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import yaml

from creditgate.auth.roles import ROLES
from creditgate.auth.tokens import TokenStore, create_token
from creditgate.domain.catalog import Catalog, CatalogConfig, compile_catalog
from creditgate.engine import Engine
from creditgate.engine.keys import KeySpace
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.payments.provider import TestProvider
from creditgate.payments.purchases import Purchases
from creditgate.transport.audit import Auditor
from creditgate.transport.guard import Guard
from creditgate.v1 import admin_pb2_grpc, credits_pb2_grpc, quota_pb2_grpc
from creditgate.wiring.server import build_server
from creditgate.worker import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from google.protobuf.message import Message
    from redis.asyncio import Redis as AsyncRedis

    from creditgate.ledger import LedgerStore

USD = 1_000_000
CATALOG = """
meters: {token: "LLM tokens", email: "emails"}
actions:
  llm: {meter: token, cost: 1}
  mail: {meter: email, cost: 1}
plans:
  shop:
    purchase: {min: 5, max: 1000, default: 10}
    pools:
      - {id: tokens, kind: allowance, meter: token, amount: 1000, period: cycle}
      - {id: credits, kind: balance, unit: usd, rates: {token: "0.01", email: "0.50"},
         low_balance: "5.00"}
  metered:
    pools:
      - {id: base, kind: allowance, meter: token, amount: 100, period: month}
      - {id: payg, kind: payg, unit: usd, rates: {token: "0.10"}, cap: "50.00", cap_min: 0,
         cap_max: "100.00", period: month}
"""


def catalog() -> Catalog:
    return compile_catalog(CatalogConfig.model_validate(yaml.safe_load(CATALOG)))


@dataclass
class Env:
    engine: Engine
    store: LedgerStore
    redis: AsyncRedis
    credits: credits_pb2_grpc.CreditsServiceStub
    quota: quota_pb2_grpc.QuotaServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    purchases: Purchases
    target: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str = "owner") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[who]}"),)

    async def sync(self) -> None:
        """The ledger worker applies every event written so far."""
        await Worker(self.redis, LedgerConsumer(self.store), self.engine.keys, block_ms=0).drain()

    async def call(self, method: str, request: Message, who: str = "owner") -> Any:  # noqa: ANN401
        return await getattr(self.credits, method)(request, metadata=self.auth(who))


@contextlib.asynccontextmanager
async def credits_sidecar(
    redis: AsyncRedis, store: LedgerStore | None, tmp_path: Path, plans: Catalog | None = None
) -> AsyncIterator[Env]:
    """A guarded sidecar on ``store`` (None: no ledger); tokens per role, and two limited ones.

    ``plans``: the catalog (default: this module's ``shop`` and ``metered``).
    """
    path = tmp_path / "tokens.json"
    tokens = {role: create_token(path, role.replace("_", "-"), role) for role in ROLES}
    tokens["owner-a"] = create_token(path, "owner-a", "owner", ("a",))
    tokens["owner-other"] = create_token(path, "owner-other", "owner", ("someone-else",))
    engine = Engine(redis, plans or catalog(), keys=KeySpace("cg", 4), test_clock=True)
    server, _health, port = await build_server(
        engine, "127.0.0.1:0", guard=Guard(TokenStore(path)), auditor=Auditor(store)
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(
            engine,
            store,  # type: ignore[arg-type]  # None only for the no-ledger case, never synced
            redis,
            credits_pb2_grpc.CreditsServiceStub(channel),
            quota_pb2_grpc.QuotaServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            Purchases(engine, TestProvider(), store),
            f"127.0.0.1:{port}",
            tokens,
        )
    finally:
        await channel.close()
        await server.stop(None)
