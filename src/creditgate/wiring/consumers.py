"""What a worker process runs: the ledger consumer, the notifier and the webhook dispatcher.

The notifier (its own consumer group) and the dispatcher run unless ``CREDITGATE_NOTIFY=false``.

Every consumer group is created before any consumer runs: the ledger's housekeeping trims only
what every group has acknowledged, so the notifier's group must exist before the first trim.
The notifier needs a SQL ledger (SQLite or PostgreSQL: its outbox lives there).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from creditgate.engine.keys import KeySpace
from creditgate.ledger.sql import SqlLedger
from creditgate.notify import Dispatcher, DispatchSettings, NotifyConsumer, NotifyStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.ledger.store import LedgerStore
    from creditgate.wiring.settings import Settings
    from creditgate.worker import Worker
    from creditgate.worker.lanes import Lanes

__all__ = ["Consumers"]


class Consumers:
    def __init__(self, settings: Settings, redis: Redis, store: LedgerStore) -> None:
        ledger = settings.ledger_worker(redis, store)
        self.workers: list[Lanes | Worker] = [ledger]
        self.dispatcher: Dispatcher | None = None
        if settings.notify and isinstance(store, SqlLedger):
            from creditgate.worker.worker import Worker  # noqa: PLC0415 - keep the import light

            notify = NotifyStore(store)
            self.dispatcher = Dispatcher(
                notify,
                DispatchSettings(
                    schedule=settings.notify_retry_schedule, timeout_s=settings.notify_timeout_s
                ),
            )
            self.workers.append(
                Worker(
                    redis,
                    NotifyConsumer(notify, self.dispatcher.wake),
                    KeySpace(settings.key_prefix, settings.shards),
                    batch=settings.worker_batch,
                    block_ms=settings.worker_block_ms,
                    claim_idle_ms=settings.worker_claim_idle_ms,
                    name=settings.worker_name,
                    metered=False,
                    signals=False,
                )
            )

    async def setup(self) -> None:
        for w in self.workers:
            await w.setup()

    async def drain(self) -> int:
        """Burst mode: apply every event in each group, then one delivery pass."""
        await self.setup()
        total = 0
        for w in self.workers:
            total += await w.drain()
        if self.dispatcher is not None:
            await self.dispatcher.run_pass()
        return total

    async def run(self) -> None:
        """Run every consumer and the dispatcher until ``stop()``, SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [w.run(handle_signals=False) for w in self.workers]
        if self.dispatcher is not None:
            tasks.append(self.dispatcher.run())
        await asyncio.gather(*tasks)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
