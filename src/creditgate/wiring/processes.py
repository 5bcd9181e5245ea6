"""The first server process's children: the other server processes and the ledger worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from creditgate.wiring import lifeline

if TYPE_CHECKING:
    from creditgate.wiring.settings import Settings

log = logging.getLogger("creditgate")
WORKER = (sys.executable, "-m", "creditgate", "worker")
_LEDGER = "CREDITGATE_LEDGER_URL"


class ServerProcesses:
    """The other server processes (CREDITGATE_PROCESSES above 1), and the ledger worker.

    The worker is here when it runs in a process of its own (``worker``, the default).

    Each server process is ``python -m creditgate serve`` on the same port (SO_REUSEPORT, so the
    kernel spreads connections over them) and the same Redis, ledger and catalog, without the
    ledger worker, migrations or demo accounts, which stay with the first process. The worker is
    ``python -m creditgate worker`` on the same Redis and ledger (consumer name ``serve-worker``,
    so that a new one takes up what the last left pending), off the serving event loop. If one
    of them exits on its own, the first process stops the others and itself and exits 1, for the
    supervisor to restart.
    They get SIGTERM when the first process dies, even by SIGKILL (``lifeline``): each is
    started under ``setpriv --pdeathsig`` and asks for it again itself, with
    ``CREDITGATE_PARENT_PID`` to check that its parent still runs.
    (``command`` is for tests, which supervise other programs.)
    """

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        command: tuple[str, ...] = (sys.executable, "-m", "creditgate", "serve"),
        *,
        worker: bool = False,
    ) -> None:
        self._command = lifeline.command(command)
        self._worker = worker
        self._env = {
            **os.environ,
            "CREDITGATE_REDIS_URL": redis_url,
            _LEDGER: settings.ledger(),
            "CREDITGATE_RUN_WORKER": "false",
            "CREDITGATE_MIGRATE_ON_START": "false",
            "CREDITGATE_LISTEN": settings.listen,
            "CREDITGATE_CONFIG": str(settings.config),
            "CREDITGATE_TEST_CLOCK": "true" if settings.test_clock else "false",
            "CREDITGATE_PARENT_PID": str(os.getpid()),
        }
        processes = settings.server_processes()
        self._env["CREDITGATE_PROCESSES"] = str(processes)
        self._count = processes - 1
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self.failed = False
        self._watchers: list[asyncio.Task[None]] = []

    def start(self, stop: asyncio.Event) -> None:
        for index in range(1, self._count + 1):
            env = {**self._env, "CREDITGATE_PROCESS_INDEX": str(index)}
            self._spawn(self._command, env, stop)
        if self._count:
            log.info("started %d more server processes: %s", self._count, self.pids())
        if self._worker:
            env = {**self._env, "CREDITGATE_WORKER_NAME": "serve-worker"}
            worker = self._spawn(lifeline.command(WORKER), env, stop)
            log.info("ledger worker running in process %d on %s", worker.pid, env[_LEDGER])

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _spawn(
        self, command: list[str], env: dict[str, str], stop: asyncio.Event
    ) -> subprocess.Popen[bytes]:
        # A process group of its own: a Ctrl-C at the terminal reaches the first process only,
        # which stops its children itself (SIGTERM, in order), rather than all of them at once.
        proc = subprocess.Popen(command, env=env, process_group=0)  # noqa: S603 - our command
        self.procs.append(proc)
        self._watchers.append(asyncio.create_task(self._watch(proc, stop)))
        return proc

    async def _watch(self, proc: subprocess.Popen[bytes], stop: asyncio.Event) -> None:
        code = await asyncio.to_thread(proc.wait)
        if not self._stopping:
            log.error("child process %d exited (%s): stopping the sidecar", proc.pid, code)
            self.failed = True
            stop.set()

    def terminate(self) -> None:
        self._stopping = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    async def wait(self, seconds: float) -> None:
        """Wait for every process to end; kill what is still running after ``seconds``."""
        if not self._watchers:
            return
        _, running = await asyncio.wait(self._watchers, timeout=seconds)
        if running:
            for proc in self.procs:
                if proc.poll() is None:
                    log.warning("server process %d did not stop: killing it", proc.pid)
                    proc.kill()
            await asyncio.wait(running)
