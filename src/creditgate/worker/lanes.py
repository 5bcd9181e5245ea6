"""Several workers over the shard streams, in one process: ``CREDITGATE_WORKER_LANES``.

Each lane is a ``Worker`` on its own share of the streams (every ``lanes``-th stream), with its
own consumer name, so its pending entries are its own and the lanes never touch the same
account (an account lives in exactly one stream). While one lane waits for its database commit,
another reads and decodes its next batch. Exactly-once is each lane's, as for one worker: a
lane acknowledges a batch only after the consumer applied it, and the consumer skips event ids
it already has. Entries that a lane of an earlier layout left pending (the lane count changed)
are claimed after ``claim_idle_ms`` like those of a dead worker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from creditgate.worker.worker import Worker, on_signal

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.engine.keys import KeySpace
    from creditgate.worker.consumer import Consumer


class Lanes:
    """``lanes`` workers sharing one Redis client and one consumer; runs and stops as one."""

    def __init__(
        self,
        redis: Redis,
        consumer: Consumer,
        keys: KeySpace,
        lanes: int,
        **options: Any,  # noqa: ANN401 - Worker's keywords, passed through
    ) -> None:
        streams = keys.streams()
        count = max(1, min(lanes, len(streams)))
        name = options.pop("name", "")
        self.workers = [
            Worker(
                redis,
                consumer,
                keys,
                streams=streams[i::count],
                signals=False,
                name=name,
                **options,
            )
            for i in range(count)
        ]
        if count > 1:
            for i, w in enumerate(self.workers):
                w.name = f"{w.name}-{i}"

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    async def setup(self) -> None:
        for w in self.workers:
            await w.setup()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Every lane until ``stop()`` or SIGTERM/SIGINT (unless ``handle_signals=False``)."""
        if handle_signals:
            on_signal(self.stop)
        await asyncio.gather(*(w.run() for w in self.workers))

    async def drain(self) -> int:
        """Burst mode on every lane at once; the events applied in all."""
        return sum(await asyncio.gather(*(w.drain() for w in self.workers)))
