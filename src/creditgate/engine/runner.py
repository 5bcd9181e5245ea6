"""Runs script calls: the account's plan learned and remembered, a missing account loaded.

The scripts check that the caller priced the request with the account's current plan and terms
(``Plan.key``). The runner remembers each account's plan, as its terms make it
(``domain.terms.apply``); on a miss or after a change the script answers PLAN with the real plan
and terms and the call is made again (one extra round trip, once per account and sidecar). A
script that finds the account missing from Redis answers NO_ACCOUNT and changes nothing; the
account is loaded from the ledger (``on_missing``) and the call made again, so every operation
sees what the ledger knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain import terms as account_terms
from creditgate.domain.errors import FailedPreconditionError, NotFoundError, UnavailableError
from creditgate.driver.failures import FAILURES, failure, guarded, track_writes
from creditgate.driver.wire import command, encode
from creditgate.engine.scripts import Scripts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

    from creditgate.domain.catalog import Catalog, Plan
    from creditgate.driver.pipelined import HotPath
    from creditgate.engine.calls.common import Args, Call
    from creditgate.engine.keys import KeySpace

__all__ = ["Runner", "no_account"]

R = TypeVar("R")
_PLAN_CACHE_SIZE = 200_000
_TRIES = 4


class Runner:
    """The Redis client, the registered scripts and the plan of each account seen."""

    def __init__(
        self,
        redis: Redis,
        catalog: Catalog,
        keys: KeySpace,
        *,
        lua_fast_path: bool = True,
        via: HotPath | None = None,
    ) -> None:
        """Script calls go through redis-py's ``redis``.

        With ``via`` they go over that pipelined connection instead (with
        ``CREDITGATE_REDIS_WAIT_REPLICAS``, the connection that WAITs for the replicas).
        """
        self.redis = redis
        self.via = via
        # Each call learns whether its command was written before a failure (failures.py).
        # (Redis Cluster's client has a pool per node: driver/connect.py marks those.)
        pool = getattr(redis, "connection_pool", None)
        if pool is not None:
            track_writes(pool)
        self.catalog = catalog
        self.keys = keys
        self.scripts = Scripts(redis, fast_path=lua_fast_path)
        self._plans: dict[str, Plan] = {}
        self._with_terms: dict[str, Plan] = {}  # plans as terms make them, by Plan.key
        # Set by the ledger: loads an account missing from Redis (after a restart or eviction)
        # and answers whether it did; the call is then made again.
        self.on_missing: Callable[[str], Awaitable[bool]] | None = None

    async def call(self, call: Call[R]) -> R:
        """Run ``call`` and decode its reply (``call.result``)."""
        plan, reply = await self.run(call)
        return call.result(plan, reply)

    async def run(self, call: Call[Any]) -> tuple[Plan | None, list[Any]]:
        """Run ``call`` with arguments built for the account's plan, learning it if needed.

        Only an account that neither Redis nor the ledger has is missing: NOT_FOUND, or, when
        the call has ``absent`` arguments (creating it), the call is made once more with them.
        """
        account_id = call.account_id
        script = getattr(self.scripts, call.script)
        keys = call.keys()
        plan = self._plans.get(account_id)
        looked_up = False
        absent: Callable[[], Args | None] | None = getattr(call, "absent", None)
        args: Args | None = None
        for _ in range(_TRIES):
            reply = await self._call(script, keys, args if args is not None else call.argv(plan))
            code = reply[0]
            if code == b"PLAN":
                plan = self.plan_with_terms(reply[1].decode(), text_of(reply, 2), text_of(reply, 3))
                self.remember(account_id, plan)
                continue
            if code == b"NO_ACCOUNT":
                self._plans.pop(account_id, None)
                if not looked_up:
                    looked_up = True
                    if self.on_missing is not None and await self.on_missing(account_id):
                        plan = None
                        continue
                    args = absent() if absent is not None else None
                    if args is not None:
                        continue
                raise no_account(account_id)
            return plan, reply
        msg = f"the plan of account {account_id!r} kept changing; try again"
        raise UnavailableError(msg)

    def plan_of(self, plan_id: str) -> Plan:
        plan = self.catalog.plan(plan_id)
        if plan is None:
            msg = (
                f"the account is on plan {plan_id!r}, which this server's catalog does not "
                "define: deploy a catalog that has it, or move the account to another plan"
            )
            raise FailedPreconditionError(msg)
        return plan

    def plan_with_terms(self, plan_id: str, terms: str, key: str) -> Plan:
        """The account's plan as its terms (stored JSON and key) make it."""
        plan = self.plan_of(plan_id)
        if not terms:
            return plan
        full = f"{plan_id}#{key}"
        made = self._with_terms.get(full)
        if made is None:
            made = account_terms.apply(plan, account_terms.Terms.decode(terms))
            if len(self._with_terms) >= _PLAN_CACHE_SIZE:
                self._with_terms.clear()
            self._with_terms[full] = made
        return made

    def known_plan(self, account_id: str) -> Plan | None:
        """The account's plan if this sidecar has seen it (the hot path needs it up front)."""
        return self._plans.get(account_id)

    def forget(self, account_id: str) -> None:
        """The account's plan or terms changed: learn them again on its next call."""
        self._plans.pop(account_id, None)

    def remember(self, account_id: str, plan: Plan) -> None:
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[account_id] = plan

    async def _call(self, script: Any, keys: Sequence[str], args: Args) -> list[Any]:  # noqa: ANN401 - redis-py's AsyncScript
        """One script call; use run(), which loads an account missing from Redis first."""
        if self.via is not None:
            return await self._call_via(self.via, script, keys, args)
        reply: list[Any] = await guarded(script(keys=keys, args=args))
        return reply

    @staticmethod
    async def _call_via(via: HotPath, script: Any, keys: Sequence[str], args: Args) -> list[Any]:  # noqa: ANN401 - redis-py's AsyncScript
        """EVALSHA over ``via``; EVAL (which loads it) when Redis does not have the script."""
        parts: list[str | int] = [len(keys), *keys, *args]
        count = len(parts) + 2
        try:
            reply = await via.call(command(count, encode(["EVALSHA", script.sha, *parts])))
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                reply = await via.call(command(count, encode(["EVAL", script.script, *parts])))
        except FAILURES as exc:
            raise failure(exc, sent=False) from exc
        if isinstance(reply, hiredis.ReplyError):
            error = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]  # redis-py untyped
            if isinstance(error, RedisConnectionError):  # LOADING: nothing ran
                raise failure(error, sent=False) from error
            raise error
        result: list[Any] = reply
        return result

    async def execute(self, pipe: Pipeline) -> list[Any]:
        """Run a pipeline; per-command errors come back in their slots.

        The pipeline is reset whatever happens: redis-py keeps the connection of a SCRIPT EXISTS
        that failed (Redis paused) out of the pool until the pipeline is collected.
        """
        try:
            replies: list[Any] = await guarded(pipe.execute(raise_on_error=False))
        finally:
            await pipe.reset()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        for reply in replies:
            if isinstance(reply, RedisConnectionError | RedisTimeoutError):
                raise failure(reply, sent=True)
        return replies

    async def require_account(self, account_id: str) -> None:
        """NOT_FOUND unless the account is in Redis or, loaded from the ledger, now is."""
        if account_id in self._plans:
            return
        key = self.keys.account(account_id)[0]
        if await guarded(self.redis.hexists(key, "plan")):
            return
        if self.on_missing is not None and await self.on_missing(account_id):
            return
        raise no_account(account_id)


def text_of(reply: list[Any], i: int) -> str:
    """Item ``i`` of a reply as text; '' past its end."""
    return reply[i].decode() if len(reply) > i else ""


def no_account(account_id: str) -> NotFoundError:
    return NotFoundError(f"account {account_id!r} does not exist: create it with AdminService")
