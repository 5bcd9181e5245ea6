"""``serve --embedded`` runs its ledger worker as a child process, off the serving event loop.

It moves every charge into the ledger, dies with the sidecar (even a SIGKILLed one), and when it
exits on its own the sidecar stops with status 1 for its supervisor to restart.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from served_kit import Served, cli, worker_children

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT_SECONDS = 10.0


def _until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_SECONDS} s"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ledger_movements(data_dir: Path, account: str) -> int:
    with sqlite3.connect(data_dir / "ledger.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM movements WHERE account = ?", (account,)
        ).fetchone()
    return int(count)


def test_the_worker_moves_charges_and_dies_with_a_killed_sidecar(tmp_path: Path) -> None:
    served = Served(tmp_path)
    served.start()
    try:
        assert served.process is not None
        (worker,) = worker_children(served.process.pid)
        before = _ledger_movements(tmp_path, "demo-zite-free")
        cli(served.target, "check", "demo-zite-free", "zite.email.send")
        _until(
            "the charge reaches the ledger",
            lambda: _ledger_movements(tmp_path, "demo-zite-free") > before,
        )
        served.process.send_signal(signal.SIGKILL)
        served.process.wait()
        _until("the worker dies with the sidecar", lambda: not _alive(worker))
    finally:
        served.stop()


def test_a_worker_that_exits_stops_the_sidecar_with_status_1(tmp_path: Path) -> None:
    served = Served(tmp_path)
    served.start()
    try:
        assert served.process is not None
        (worker,) = worker_children(served.process.pid)
        os.kill(worker, signal.SIGKILL)
        assert served.process.wait(timeout=WAIT_SECONDS + 10) == 1
        assert "exited" in served.log.read_text(errors="replace")
    finally:
        served.stop()


def test_ctrl_c_stops_the_sidecar_and_its_children_in_order(tmp_path: Path) -> None:
    """SIGINT to the terminal's process group: only the sidecar gets it, and stops the rest.

    (Before, the ledger worker and the embedded redis-server got it too: Redis was restarted
    under a draining sidecar, and a worker that quit first could make the sidecar exit 1.)
    """
    served = Served(tmp_path, own_group=True)
    served.start()
    proc = served.process
    assert proc is not None
    try:
        _until("the worker starts", lambda: len(worker_children(proc.pid)) == 1)
        time.sleep(1)  # serving a while, as a sidecar is when someone presses Ctrl-C
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=WAIT_SECONDS + 10) == 0
        _until("every child is gone", lambda: not any(_alive(int(c)) for c in children))
        text = served.log.read_text(errors="replace")
        assert "restarting it" not in text
        assert "exited" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
