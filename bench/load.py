"""A fixed-concurrency CheckAndConsume load over N accounts (h2load cannot vary the body).

Run: python bench/load.py TARGET SECONDS CONCURRENCY ACCOUNTS. With ACCOUNTS = 1 it charges
``bench-hot``; otherwise a random ``acct-%012d`` below ACCOUNTS per call. Prints the number of
decisions it got. Used to compare the sidecar's CPU time per decision across account counts:
the client's own speed does not matter for that figure.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import grpc

from creditgate.v1 import quota_pb2, quota_pb2_grpc

ATTRS = {"model": "pro", "feature": "agents"}


async def main(target: str, seconds: float, concurrency: int, accounts: int) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)

        async def worker() -> None:
            nonlocal done
            rng = random.Random()  # noqa: S311 - load spreading, not security
            while time.monotonic() < deadline:
                account = "bench-hot" if accounts == 1 else f"acct-{rng.randrange(accounts):012d}"
                reply = await stub.CheckAndConsume(
                    quota_pb2.CheckAndConsumeRequest(
                        account_id=account, action="agent.message", quantity=1, attributes=ATTRS
                    )
                )
                if not reply.allowed:
                    msg = f"denied: {reply.message}"
                    raise RuntimeError(msg)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


if __name__ == "__main__":
    import uvloop

    target, seconds, concurrency, accounts = sys.argv[1:5]
    print(uvloop.run(main(target, float(seconds), int(concurrency), int(accounts))))
