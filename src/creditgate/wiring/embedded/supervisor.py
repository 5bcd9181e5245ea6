"""Keep the embedded redis-server of ``serve --embedded`` running for as long as the sidecar.

A redis-server that dies (killed, out of memory) is reaped at once, so no ``<defunct>`` child
is left, and started again on the same data dir: it reads its AOF back. The embedded server
runs with ``appendfsync always``: each write reaches the AOF, and is fsynced, before Redis
replies, so neither the death of the process nor of the machine loses an answered charge.
(With ``everysec`` Redis postpones the write by up to 2 s while a slow fsync runs, and a
SIGKILL in that window lost acknowledged charges in a test here.)
If it cannot be started again, ``on_failure`` is called, for the sidecar to exit non-zero and
let its supervisor restart it.

The supervisor is one thread that waits for the process, because the restarted child's
PR_SET_PDEATHSIG is tied to the thread that starts it: that thread lives as long as the child.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from creditgate.wiring.embedded.redis import EmbeddedRedis, EmbeddedRedisError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Supervisor"]

log = logging.getLogger("creditgate.wiring.embedded.redis")
_ATTEMPTS = 3
_BACKOFF_SECONDS = 0.5


class Supervisor:
    """Restarts ``embedded`` whenever it exits until ``embedded.stop()``; see the module doc.

    ``on_failure`` receives a one-line reason and is called from the supervisor's thread.
    """

    def __init__(self, embedded: EmbeddedRedis, on_failure: Callable[[str], None]) -> None:
        self._embedded = embedded
        self._on_failure = on_failure
        self._thread = threading.Thread(
            target=self._run, name="creditgate-embedded-redis", daemon=True
        )
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread, which ends once ``embedded.stop()`` has stopped the server."""
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            pid = self._embedded.pid
            code = self._embedded.wait()
            if code is None or self._embedded.stopping:
                return
            log.error(
                "embedded redis-server (pid %s) exited with status %s; restarting it from its AOF",
                pid,
                code,
            )
            if not self._restart():
                return

    def _restart(self) -> bool:
        problem = ""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._embedded.restart()
            except EmbeddedRedisError as exc:
                if self._embedded.stopping:
                    return False
                problem = str(exc).splitlines()[0]
                log.warning("restart %d of %d failed: %s", attempt, _ATTEMPTS, problem)
                time.sleep(_BACKOFF_SECONDS * attempt)
                continue
            self.restarts += 1
            log.info("embedded redis-server restarted (pid %s)", self._embedded.pid)
            return True
        self._on_failure(f"the embedded redis-server could not be restarted: {problem}")
        return False
