"""The bare floor: a grpc.aio server with creditgate's proto that answers a constant Decision.

Run: python bench/floor.py PORT [--uvloop] [--redis URL [--burn N [--steps]] | --ratelimit].
It is what creditgate's own serving costs are measured against (same proto, same grpc.aio, no
Redis, no work).

With ``--ratelimit`` it serves Envoy's ``RateLimitService/ShouldRateLimit`` instead, answering
every call ``OK`` (no descriptor statuses, no headers): the floor of the rate-limit filter's
path through Envoy (bench/envoy_path.py).

With ``--redis URL`` every answer first waits for one PING on a pipelined connection to that
Redis (creditgate's own FastRedis): the floor of any gate that makes one Redis round trip per
request, before any script runs or any answer is computed.

``--burn N`` (bench/decompose.py) replaces the PING with an EVALSHA of a script that only counts
to N, sent with consume's number of keys and arguments: a Redis round trip whose script takes
as long as creditgate's, doing none of its work. ``--steps`` adds creditgate's own Python for
each request before that call (validation, the request's shape and RESP, the engine's plan and
account caches), still answering the constant Decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis.asyncio import Redis

from creditgate.domain.catalog import load_catalog
from creditgate.domain.results import Decision
from creditgate.driver.pipelined import FastRedis
from creditgate.driver.wire import command, encode
from creditgate.engine import Engine, KeySpace
from creditgate.v1 import quota_pb2, quota_pb2_grpc

PING = command(1, encode(["PING"]))
BURN = "local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return x"
CATALOG = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"

ANSWER = quota_pb2.Decision(
    allowed=True,
    reason=quota_pb2.REASON_ALLOWED,
    cost=1_000_000,
    meter="agent_credit",
    debits=[
        quota_pb2.Debit(
            pool_id="premium",
            amount=1_000_000,
            unit="agent_credit",
            remaining=999_000_000,
            covered=1_000_000,
        )
    ],
    balances=[quota_pb2.Remaining(pool_id="premium", remaining=999_000_000, unit="agent_credit")],
    request_id="r",
)


class Floor(quota_pb2_grpc.QuotaServiceServicer):
    async def CheckAndConsume(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        return ANSWER


RATE_LIMIT_OK = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)


class RateLimitFloor(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]  # untyped
    async def ShouldRateLimit(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        return RATE_LIMIT_OK


class PingFloor(Floor):
    def __init__(self, url: str) -> None:
        self.redis = FastRedis(url)

    async def CheckAndConsume(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        await self.redis.call(PING)
        return ANSWER

    async def CheckAndConsumeBatch(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        return quota_pb2.CheckAndConsumeBatchResponse(decisions=[ANSWER] * len(request.requests))


class BurnFloor(PingFloor):
    """Waits for a script of consume's keys and arguments that counts to ``n``."""

    def __init__(self, url: str, n: int) -> None:
        super().__init__(url)
        sha = hashlib.sha1(BURN.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        keys = [f"{{cg:1}}:k{i}" for i in range(5)]
        parts: list[str | int] = ["EVALSHA", sha, len(keys), *keys, n]
        parts += [f"arg-{i:06d}" for i in range(60)]
        self.payload = command(len(parts), encode(parts))

    async def load(self) -> None:
        await self.redis.call(command(3, encode(["SCRIPT", "LOAD", BURN])))

    async def CheckAndConsume(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        await self.redis.call(self.payload)
        return ANSWER


class StepsFloor(BurnFloor):
    """BurnFloor plus creditgate's own steps for each request (its answer is not built)."""

    def __init__(self, url: str, n: int) -> None:
        super().__init__(url, n)
        self.engine = Engine(Redis.from_url(url), load_catalog(CATALOG), keys=KeySpace("cg", 1))
        plan = self.engine.catalog.plan("agent_team")
        assert plan is not None
        self.plan = plan

    async def CheckAndConsume(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        call = self.engine.quota.prepare(
            request.account_id,
            request.action,
            request.quantity,
            request.attributes,
            request.request_id,
            dry_run=request.dry_run,
            hold_ttl_ms=None,
        )
        if isinstance(call, Decision):
            raise TypeError(call.message)
        call.resp(self.plan)
        await self.redis.call(self.payload)
        return ANSWER


async def main(port: int, redis_url: str | None) -> None:
    server = grpc.aio.server()
    if "--ratelimit" in sys.argv:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitFloor(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
        return
    # The floor serves CheckAndConsume (and the ping floor the batch) only; grpc answers the
    # methods it does not define with UNIMPLEMENTED, which the stubs call abstract.
    servicer: Floor
    if redis_url and "--burn" in sys.argv:
        n = int(sys.argv[sys.argv.index("--burn") + 1])
        burn = StepsFloor(redis_url, n) if "--steps" in sys.argv else BurnFloor(redis_url, n)  # type: ignore[abstract]
        await burn.load()
        servicer = burn
    else:
        servicer = PingFloor(redis_url) if redis_url else Floor()  # type: ignore[abstract]
    quota_pb2_grpc.add_QuotaServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    url = sys.argv[sys.argv.index("--redis") + 1] if "--redis" in sys.argv else None
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main(int(sys.argv[1]), url))
    else:
        asyncio.run(main(int(sys.argv[1]), url))
