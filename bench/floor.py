"""The bare floor: a grpc.aio server with creditgate's proto that answers a constant Decision.

Run: python bench/floor.py PORT [--uvloop] [--redis URL]. It is what creditgate's own serving
costs are measured against (same proto, same grpc.aio, no Redis, no work).

With ``--redis URL`` every answer first waits for one PING on a pipelined connection to that
Redis (creditgate's own FastRedis): the floor of any gate that makes one Redis round trip per
request, before any script runs or any answer is computed.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from creditgate.engine.fastpath import FastRedis, command, encode
from creditgate.v1 import quota_pb2, quota_pb2_grpc

PING = command(1, encode(["PING"]))

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


class PingFloor(Floor):
    def __init__(self, url: str) -> None:
        self.redis = FastRedis(url)

    async def CheckAndConsume(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        await self.redis.call(PING)
        return ANSWER

    async def CheckAndConsumeBatch(self, request, context):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, ARG002, N802
        return quota_pb2.CheckAndConsumeBatchResponse(decisions=[ANSWER] * len(request.requests))


async def main(port: int, redis_url: str | None) -> None:
    server = grpc.aio.server()
    # The floor serves CheckAndConsume (and the ping floor the batch) only; grpc answers the
    # methods it does not define with UNIMPLEMENTED, which the stubs call abstract.
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
