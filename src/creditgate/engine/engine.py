"""The engine: every quota and admin operation, each one script call on one account's slot.

``Engine`` composes the operations (``QuotaOps``, ``ReturnOps``, ``AdminOps``) over one
``Runner`` and one ``calls.common.Context``; it adds no logic of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from creditgate.engine.admin import AdminOps
from creditgate.engine.calls.common import Context
from creditgate.engine.calls.consume import ConsumeCalls
from creditgate.engine.keys import KeySpace
from creditgate.engine.quota import QuotaOps
from creditgate.engine.returns import ReturnOps
from creditgate.engine.runner import Runner
from creditgate.engine.scripts import script_source

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

    from creditgate.domain.catalog import Catalog
    from creditgate.driver.pipelined import HotPath
    from creditgate.engine.scripts import Scripts

__all__ = ["DAY_MS", "Engine"]

DAY_MS = 86_400_000


class Engine:
    """Typed operations over the Lua scripts. Validates every input before touching Redis.

    ``quota`` charges and holds (CheckAndConsume, its batch, Reserve), ``returns`` gives back
    (Settle, Release, Refund), ``admin`` changes and reads accounts. Their methods are also
    reachable here by name (``engine.consume``, ``engine.grant``, ...).
    """

    def __init__(  # noqa: PLR0913 - every setting is a keyword with a default
        self,
        redis: Redis,
        catalog: Catalog,
        *,
        keys: KeySpace | None = None,
        test_clock: bool = False,
        idempotency_ttl_ms: int = DAY_MS,
        hold_ttl_ms: int = 300_000,
        fast: HotPath | None = None,
        lua_fast_path: bool = True,
        combine: bool = True,
        require_request_id: bool = False,
        replicated: bool = False,
    ) -> None:
        self.redis = redis
        self.catalog = catalog
        self.keys = keys or KeySpace()
        self.fast = fast
        self.ctx = Context(
            catalog,
            self.keys,
            test_clock=test_clock,
            idempotency_ttl_ms=idempotency_ttl_ms,
            hold_ttl_ms=hold_ttl_ms,
        )
        # Replicated (WAIT on ``fast``): every script call goes over ``fast``, not redis-py.
        via = fast if replicated else None
        self.runner = Runner(redis, catalog, self.keys, lua_fast_path=lua_fast_path, via=via)
        scripts = self.runner.scripts
        self.consume_calls = ConsumeCalls(
            self.ctx,
            scripts.consume.sha,
            scripts.consume_batch.sha,
            script_source("consume_batch"),
        )
        if fast is not None and combine and lua_fast_path:
            fast.combine_with(self.consume_calls)
        self.quota = QuotaOps(
            self.runner, self.consume_calls, fast, require_request_id=require_request_id
        )
        self.returns = ReturnOps(self.runner, self.ctx)
        self.admin = AdminOps(self.runner, self.ctx)
        # The operations, by name.
        self.consume = self.quota.consume
        self.consume_many = self.quota.consume_many
        self.reserve = self.quota.reserve
        self.request_id = self.quota.request_id
        self.settle = self.returns.settle
        self.release = self.returns.release
        self.refund = self.returns.refund
        self.balance = self.admin.balance
        self.create_account = self.admin.create_account
        self.update_account = self.admin.update_account
        self.set_pool_settings = self.admin.set_pool_settings
        self.set_terms = self.admin.set_terms
        self.grant = self.admin.grant
        self.set_auto_topup = self.admin.set_auto_topup
        self.topup_paused = self.admin.topup_paused
        self.auto_topup = self.admin.auto_topup
        self.advance_clock = self.admin.advance_clock

    def remember(self, account_id: str, plan_id: str) -> None:
        """Learn an account's plan (one without terms), as a call that reached Redis would."""
        self.runner.remember(account_id, self.runner.plan_of(plan_id))

    @property
    def scripts(self) -> Scripts:
        return self.runner.scripts

    @property
    def test_clock(self) -> bool:
        return self.ctx.test_clock

    @property
    def idempotency_ttl_ms(self) -> int:
        return self.ctx.idempotency_ttl_ms

    @property
    def on_missing(self) -> Callable[[str], Awaitable[bool]] | None:
        """Loads an account missing from Redis out of the ledger (set by ``ledger.hydrate``)."""
        return self.runner.on_missing

    @on_missing.setter
    def on_missing(self, load: Callable[[str], Awaitable[bool]] | None) -> None:
        self.runner.on_missing = load
