"""A pass run every so often beside the stream consumers: the worker's timed work.

The recurring charges' ticker (ledger/due.py) and the payments' recovery (payments/recovery.py)
each run one pass at a time, every ``interval_s``, until the worker stops. A pass that fails is
logged and the next one tries again: neither may take the worker down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from creditgate.domain.errors import UnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("creditgate.worker")


class Periodic:
    """Runs ``step`` every ``interval_s`` seconds until ``stop()``."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval_s: float,
        transient: tuple[type[BaseException], ...] = (UnavailableError,),
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.transient = transient  # a backend away for a while: one line, no traceback
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.step()
            except self.transient as exc:
                log.warning("%s: %s; the next pass tries again", self.name, exc)
            except Exception:
                log.exception("%s: the pass failed; the next one tries again", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.interval_s)

    def stop(self) -> None:
        self._stopped.set()
