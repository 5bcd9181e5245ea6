"""What a worker process runs: the ledger, the notifier, the dispatcher, the payer, the ticker.

The ledger consumer always; the notifier (its own consumer group) and the dispatcher unless
``CREDITGATE_NOTIFY=false``; the top-up payer (its own group too, payments/topups.py)
whenever the ledger is SQL, since the top-ups are recorded there as purchases. It charges the
configured payment provider. With a SQL ledger too, two timed passes (worker/periodic.py): the
ticker that charges the recurring charges due on accounts without calls (ledger/due.py,
``CREDITGATE_RECURRING_TICK_S``) and the recovery of payments that Redis lost before they were
credited (payments/recovery.py, ``CREDITGATE_PAYMENTS_RECOVERY_S``).

Every consumer group is created before any consumer runs: the ledger's housekeeping trims only
what every group has acknowledged, so the notifier's group must exist before the first trim.
The notifier needs a SQL ledger (SQLite or PostgreSQL: its outbox lives there).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from creditgate.domain.errors import UnavailableError
from creditgate.engine.keys import KeySpace
from creditgate.ledger.due import RecurringTicker
from creditgate.ledger.sql import SqlLedger
from creditgate.ledger.store import LedgerError
from creditgate.notify import (
    Dispatcher,
    DispatchSettings,
    Notifications,
    NotifyConsumer,
    NotifyStore,
)
from creditgate.payments.recovery import PaymentRecovery
from creditgate.payments.topups import TopUpConsumer
from creditgate.wiring.engine import engine_for
from creditgate.worker.periodic import Periodic

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.driver.pipelined import HotPath
    from creditgate.engine import Engine
    from creditgate.ledger.store import LedgerStore
    from creditgate.payments.provider import PaymentProvider
    from creditgate.wiring.settings import Settings
    from creditgate.worker import Worker
    from creditgate.worker.lanes import Lanes

__all__ = ["Consumers"]


class Consumers:
    def __init__(
        self, settings: Settings, redis: Redis, store: LedgerStore, engine: Engine | None = None
    ) -> None:
        ledger = settings.ledger_worker(redis, store)
        self.workers: list[Lanes | Worker] = [ledger]
        self.dispatcher: Dispatcher | None = None
        self.provider: PaymentProvider | None = None
        self._own_fast: HotPath | None = None  # the engine's connection, when built here
        # Timed passes: recurring charges due (ledger/due.py), payments lost with Redis
        # (payments/recovery.py); each with its interval, 0: off.
        self.periodic: list[Periodic] = []
        if not isinstance(store, SqlLedger):
            return
        notify = NotifyStore(store) if settings.notify else None
        if notify is not None:
            self.dispatcher = Dispatcher(
                notify,
                DispatchSettings(
                    schedule=settings.notify_retry_schedule, timeout_s=settings.notify_timeout_s
                ),
            )
            self.workers.append(
                self._worker(settings, redis, NotifyConsumer(notify, self.dispatcher.wake))
            )
        if engine is None:
            from creditgate.ledger.hydrate import install_hydration  # noqa: PLC0415

            engine = engine_for(settings, redis)
            self._own_fast = engine.fast
            install_hydration(engine, store)
        self.provider = settings.payment_provider()
        notices = (
            Notifications(notify, self.dispatcher.wake)
            if notify is not None and self.dispatcher is not None
            else None
        )
        topups = TopUpConsumer(engine, self.provider, store, notices)
        self.workers.append(self._worker(settings, redis, topups))
        passes = [
            ("recurring charges", RecurringTicker(engine, store).run_pass,
             settings.recurring_tick_s),
            ("payments recovery", PaymentRecovery(engine, store, topups).run_pass,
             settings.payments_recovery_s),
        ]  # fmt: skip
        away = (UnavailableError, LedgerError)  # Redis or the database, for a while
        self.periodic = [
            Periodic(name, step, every, away) for name, step, every in passes if every > 0
        ]

    @staticmethod
    def _worker(
        settings: Settings, redis: Redis, consumer: NotifyConsumer | TopUpConsumer
    ) -> Worker:
        from creditgate.worker.worker import Worker  # noqa: PLC0415 - keep the import light

        return Worker(
            redis,
            consumer,
            KeySpace(settings.key_prefix, settings.shards),
            batch=settings.worker_batch,
            block_ms=settings.worker_block,
            claim_idle_ms=settings.worker_claim_idle_ms,
            name=settings.worker_name,
            metered=False,
            signals=False,
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
        for p in self.periodic:
            await p.step()
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
        tasks += [p.run() for p in self.periodic]
        try:
            await asyncio.gather(*tasks)
        finally:
            if self.provider is not None:
                await self.provider.close()
            if self._own_fast is not None:
                await self._own_fast.aclose()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        for p in self.periodic:
            p.stop()
