"""Plumbing shared by every engine operation: script calls, plan resolution, argument caches.

The scripts check that the caller priced the request with the account's current plan. The engine
remembers each account's plan; on a miss or after a plan change the script answers PLAN with the
real one and the call is made again (one extra round trip, once per account and sidecar).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain import requests as check
from creditgate.domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from creditgate.domain.wording import a_or_an
from creditgate.engine.failures import failure, guarded, track_writes
from creditgate.engine.fastpath import FastRedis, command, encode
from creditgate.engine.keys import KeySpace
from creditgate.engine.scripts import Scripts, script_source

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

    from creditgate.domain.catalog import Catalog, Plan, Price

Args = list[str | int]
_PLAN_CACHE_SIZE = 200_000
_ARGS_CACHE_SIZE = 20_000
DAY_MS = 86_400_000


class EngineCore:
    """Holds the Redis client, the catalog and the caches; runs scripts."""

    def __init__(  # noqa: PLR0913 - every setting is a keyword with a default
        self,
        redis: Redis,
        catalog: Catalog,
        *,
        keys: KeySpace | None = None,
        test_clock: bool = False,
        idempotency_ttl_ms: int = DAY_MS,
        hold_ttl_ms: int = 300_000,
        fast: FastRedis | None = None,
        lua_fast_path: bool = True,
        combine: bool = True,
        require_request_id: bool = False,
    ) -> None:
        self.redis = redis
        # Each call learns whether its command was written before a failure (failures.py).
        track_writes(redis.connection_pool)
        self.require_request_id = require_request_id
        self.catalog = catalog
        self.keys = keys or KeySpace()
        self.test_clock = test_clock
        self.idempotency_ttl_ms = idempotency_ttl_ms
        self.hold_ttl_ms = hold_ttl_ms
        self._clock = "1" if test_clock else "0"
        self._scripts = Scripts(redis, fast_path=lua_fast_path)
        self._plans: dict[str, str] = {}
        self.fast = fast
        self._consume_args: dict[tuple[object, ...], tuple[Args, Price | None, bytes]] = {}
        # The hot path's caches (engine.Engine): request shapes, the RESP of their fixed parts
        # per plan, and each account's keys; all bounded, all rebuilt on a miss.
        self._shapes: dict[tuple[object, ...], Any] = {}
        self._consume_parts: dict[tuple[object, ...], tuple[bytes, bytes, int, str]] = {}
        self._account_heads: dict[str, tuple[bytes, str]] = {}
        self._consume_head = encode(["EVALSHA", self._scripts.consume.sha, 5])
        self._batch_head = encode(["EVALSHA", self._scripts.consume_batch.sha])
        # FastRedis sends this when consume_batch is missing (after a Redis restart).
        self.load = command(3, encode(["SCRIPT", "LOAD", script_source("consume_batch")]))
        if fast is not None and combine and lua_fast_path:
            fast.combine_with(self)  # engine.Engine.combine
        self._plain_args: dict[str, Args] = {}
        # Set by the ledger: loads an account missing from Redis (after a restart or eviction)
        # and answers whether it did; the call is then made again.
        self.on_missing: Callable[[str], Awaitable[bool]] | None = None

    def combine(self, members: Sequence[Any]) -> bytes:
        """FastRedis's Combiner: charges of one account and shape as one consume_batch call.

        Overridden by engine.Engine, which builds CheckAndConsume's commands.
        """
        raise NotImplementedError

    # --- arguments -----------------------------------------------------------------------

    def header(self, account_id: str, plan: Plan | None, pool_args: Args) -> Args:
        if plan is None:
            return [account_id, "", self._clock, 0]
        return [account_id, plan.id, self._clock, len(plan.pools), *pool_args]

    def plain_args(self, plan: Plan) -> Args:
        """Pool descriptors with nothing eligible (maintenance and balances only)."""
        args = self._plain_args.get(plan.id)
        if args is None:
            args = []
            for p in plan.pools:
                args += [
                    p.id,
                    p.code,
                    p.period,
                    p.amount,
                    0,
                    p.block_size,
                    p.block_price,
                    p.cap,
                    "0",
                    "1" if p.enabled else "0",
                ]
            self._plain_args[plan.id] = args
        return args

    def consume_args(
        self,
        plan: Plan,
        action: str,
        attributes: dict[str, str],
    ) -> tuple[Args, Price | None, bytes]:
        """Pool descriptors with eligibility and rates for one action, and its price.

        The third item is ARGV[2..] (plan id, clock flag, count, descriptors) as RESP, for the
        fast path.
        """
        key = (plan.id, action, *(attributes.get(k) for k in plan.attribute_keys))
        hit = self._consume_args.get(key)
        if hit is not None:
            return hit
        price = plan.actions[action].price(attributes)
        args: Args = []
        for p in plan.pools:
            rate = None if price is None else p.rate_for(action, price.meter, attributes)
            args += [
                p.id,
                p.code,
                p.period,
                p.amount,
                rate or 0,
                p.block_size,
                p.block_price,
                p.cap,
                "0" if rate is None else "1",
                "1" if p.enabled else "0",
            ]
        if len(self._consume_args) >= _ARGS_CACHE_SIZE:
            self._consume_args.clear()
        encoded = encode([plan.id, self._clock, len(plan.pools), *args])
        self._consume_args[key] = (args, price, encoded)
        return args, price, encoded

    # --- running scripts -----------------------------------------------------------------

    def plan_of(self, plan_id: str) -> Plan:
        plan = self.catalog.plan(plan_id)
        if plan is None:
            msg = (
                f"the account is on plan {plan_id!r}, which this server's catalog does not "
                "define: deploy a catalog that has it, or move the account to another plan"
            )
            raise FailedPreconditionError(msg)
        return plan

    async def run(
        self,
        script: AsyncScript,
        account_id: str,
        keys: Sequence[str],
        build: Callable[[Plan | None], Args],
        absent: Callable[[Plan | None], Args] | None = None,
    ) -> tuple[Plan | None, list[Any]]:
        """Run ``script`` with arguments built for the account's plan, learning it if needed.

        This is the only way an account's script is run, so every operation sees what the
        ledger knows: a script finds the account missing from Redis (it answers NO_ACCOUNT, and
        changes nothing), the account is loaded from the ledger, and the call is made again.
        Only an account that neither Redis nor the ledger has is missing: NOT_FOUND, or, when
        ``absent`` is given (creating it), the call is made once more with its arguments.
        """
        plan_id = self._plans.get(account_id, "")
        looked_up = False
        make = build
        for _ in range(4):
            plan = self.plan_of(plan_id) if plan_id else None
            reply = await self._call(script, keys, make(plan))
            code = reply[0]
            if code == b"PLAN":
                plan_id = reply[1].decode()
                self.remember(account_id, plan_id)
                continue
            if code == b"NO_ACCOUNT":
                self._plans.pop(account_id, None)
                if not looked_up:
                    looked_up = True
                    if self.on_missing is not None and await self.on_missing(account_id):
                        plan_id = ""
                        continue
                    if absent is not None:
                        make = absent
                        continue
                raise _no_account(account_id)
            return plan, reply
        msg = f"the plan of account {account_id!r} kept changing; try again"
        raise UnavailableError(msg)

    def remember(self, account_id: str, plan_id: str) -> None:
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[account_id] = plan_id

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Args) -> list[Any]:
        """One script call; use run(), which loads an account missing from Redis first."""
        reply: list[Any] = await guarded(script(keys=keys, args=args))
        return reply

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

    # --- ids and accounts ----------------------------------------------------------------

    def request_id(self, given: str, *, dry_run: bool = False) -> str:
        """The id a charge runs under: ``given``, or a new one (none when ids are required).

        The transport returns it to the caller before the charge is made, so that a call whose
        outcome is unknown can be retried under the same id. A dry run changes nothing, so it
        gets a new id even when ids are required.
        """
        if given or (self.require_request_id and not dry_run):
            return given
        return check.new_id()

    def check_request_id(self, value: str, field: str, *, dry_run: bool = False) -> str:
        """A charge's id; with ``require_request_id`` an empty one is refused (not a dry run's)."""
        if not value and self.require_request_id and not dry_run:
            msg = (
                f"{field} is required: this server runs with CREDITGATE_REQUIRE_REQUEST_ID=true; "
                "send a unique id for each charge and the same id when retrying it"
            )
            raise InvalidArgumentError(msg)
        return check.check_id(value, field, generate=True)

    async def require_account(self, account_id: str) -> None:
        """NOT_FOUND unless the account is in Redis or, loaded from the ledger, now is."""
        if account_id in self._plans:
            return
        key = self.keys.account(account_id)[0]
        if await guarded(self.redis.hexists(key, "plan")):
            return
        if self.on_missing is not None and await self.on_missing(account_id):
            return
        raise _no_account(account_id)


def _no_account(account_id: str) -> NotFoundError:
    return NotFoundError(f"account {account_id!r} does not exist: create it with AdminService")


def require_plan(plan: Plan | None) -> Plan:
    """After run() returned OK the plan is known; this narrows the type."""
    if plan is None:  # pragma: no cover - run() only returns OK for a priced call
        msg = "internal: no plan"
        raise FailedPreconditionError(msg)
    return plan


def pool_or_error(plan: Plan, pool_id: str, kinds: tuple[str, ...]) -> None:
    pool = plan.pool(pool_id)
    if pool is None:
        names = ", ".join(p.id for p in plan.pools)
        msg = f"plan {plan.id} has no pool {pool_id!r}; its pools are: {names}"
        raise NotFoundError(msg)
    if pool.kind not in kinds:
        msg = (
            f"pool {pool_id!r} is {a_or_an(pool.kind)} pool; this needs"
            f" {a_or_an(' or '.join(kinds))} pool"
        )
        raise InvalidArgumentError(msg)


def fingerprint(text: str) -> str:
    """What an idempotency record remembers of its request, to refuse reuse for another."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def too_large(reply: list[Any]) -> None:
    """The script found quantity x price beyond the exact range."""
    if reply[0] == b"TOO_LARGE":
        msg = "quantity x price is beyond the exact range (2^52 micro-units); split it"
        raise InvalidArgumentError(msg)
