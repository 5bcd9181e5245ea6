"""ServerProcesses: how the first server process supervises the others (CREDITGATE_PROCESSES).

tests/wiring/test_cli.py runs the real sidecar with two processes. These tests put other programs
under the same supervision, for what a real server process does not do on cue: ignore SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

from creditgate.wiring.processes import ServerProcesses
from creditgate.wiring.settings import Settings, cores_available

if TYPE_CHECKING:
    from pathlib import Path

SETTINGS = Settings(processes=2, listen="127.0.0.1:50999")
STUBBORN = (
    "import pathlib, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(sys.argv[1]).touch()\n"
    "time.sleep(120)\n"
)


async def test_a_process_that_ignores_sigterm_is_killed_after_the_wait(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    group = ServerProcesses(
        SETTINGS, "redis://unused", (sys.executable, "-c", STUBBORN, str(ready))
    )
    stop = asyncio.Event()
    group.start(stop)
    (proc,) = group.procs
    for _ in range(200):
        if ready.exists():
            break
        await asyncio.sleep(0.05)
    assert ready.exists(), "the stubborn process never started"
    group.terminate()
    await group.wait(0.5)
    assert proc.returncode == -signal.SIGKILL
    assert not group.failed  # stopping was asked for: not a failure
    assert not stop.is_set()


async def test_a_process_that_exits_on_its_own_stops_the_sidecar() -> None:
    group = ServerProcesses(SETTINGS, "redis://unused", (sys.executable, "-c", "exit(3)"))
    stop = asyncio.Event()
    group.start(stop)
    await asyncio.wait_for(stop.wait(), 30)
    assert group.failed
    assert group.procs[0].returncode == 3
    await group.wait(1)


def test_processes_zero_is_one_per_available_core(tmp_path: Path) -> None:
    """0 resolves to the CPU affinity, capped by a cgroup v2 quota rounded up; 1 on port :0."""
    cores = len(os.sched_getaffinity(0))
    assert cores_available(tmp_path) == cores  # no cpu.max: no quota
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert cores_available(tmp_path) == cores
    cpu_max.write_text("50000 100000\n")  # half a core
    assert cores_available(tmp_path) == 1
    cpu_max.write_text("150000 100000\n")  # one and a half
    assert cores_available(tmp_path) == min(cores, 2)
    cpu_max.write_text(f"{(cores + 3) * 100000} 100000\n")  # more quota than cores
    assert cores_available(tmp_path) == cores
    auto = Settings(processes=0, listen="127.0.0.1:50999")
    assert auto.server_processes(tmp_path) == cores
    assert Settings(processes=0, listen="127.0.0.1:0").server_processes(tmp_path) == 1
    assert Settings(processes=3, listen="127.0.0.1:0").server_processes(tmp_path) == 3
