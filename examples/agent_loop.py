"""An agent loop that asks creditgate before each LLM call: reserve an estimate, settle the real.

Run it against `make run`:  .venv/bin/python examples/agent_loop.py demo-shingle-pro 5
The "LLM" is a stand-in that answers with a random number of tokens up to its max_tokens; a
real agent calls its model there. Each turn holds max_tokens (shingle.llm is priced per token),
settles the tokens actually used, and stops when a hold is refused.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

import grpc

from creditgate.client import AsyncClient, HoldRefusedError

MAX_TOKENS = 2000


async def fake_llm(prompt: str, max_tokens: int) -> tuple[str, int]:
    """A stand-in model: some text, and how many tokens it used."""
    await asyncio.sleep(0.01)
    used = random.randint(max_tokens // 4, max_tokens)  # noqa: S311 - a simulation
    return f"answer to {prompt!r}", used


async def run(target: str, account: str, turns: int) -> int:
    """Run ``turns`` turns; return the tokens charged in all."""
    charged = 0
    async with AsyncClient(target, token=os.environ.get("CREDITGATE_TOKEN", "")) as client:
        for turn in range(turns):
            try:
                async with client.reserve(account, "shingle.llm", MAX_TOKENS) as hold:
                    _, used = await fake_llm(f"step {turn}", MAX_TOKENS)
                    settled = await hold.settle(used)
            except HoldRefusedError as refused:
                print(f"turn {turn}: stopped, {refused.decision.message}")
                break
            except grpc.aio.AioRpcError as failed:  # e.g. NOT_FOUND: no such account
                print(f"turn {turn}: {failed.code().name}: {failed.details()}")
                break
            charged += used
            print(f"turn {turn}: used {settled.cost}")
    return charged


if __name__ == "__main__":
    account = sys.argv[1] if len(sys.argv) > 1 else "demo-shingle-pro"
    turns = int(sys.argv[2]) if len(sys.argv) > 2 else 5  # noqa: PLR2004
    target = os.environ.get("CREDITGATE_TARGET", "127.0.0.1:50051")
    total = asyncio.run(run(target, account, turns))
    print(f"charged {total:,} tokens")
