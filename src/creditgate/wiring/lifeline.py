"""Child processes that die with the sidecar, even when it is killed with SIGKILL.

Linux sends a process a chosen signal when its parent dies if the process asked for it with
``prctl(PR_SET_PDEATHSIG)``. Both kinds of children use it: the embedded redis-server and the
other server processes of ``CREDITGATE_PROCESSES``. The request has to be made in the child,
and no Python code may run there between ``fork`` and ``exec``: a ``preexec_fn`` in this
threaded process (gRPC's threads, the executor's) made the forked child segfault before it
reached redis-server, about one start in six under load.

So the child is started as ``setpriv --pdeathsig TERM -- <command>`` (util-linux, present on
Debian and in the image): setpriv makes the request and execs the command, and ``subprocess``
starts it with vfork, without running Python in the child. A Python child (a server process)
also makes the request itself at its start (``hold_on``) and checks that its parent is still
the process that started it, which closes the window between the fork and the request in which
the parent could die unseen; redis-server cannot do that, and a server left by that rare race
is stopped at the next start (``embedded_stale``). Without setpriv (macOS, a minimal image)
redis-server does not die with the sidecar, and the same clean-up applies.

The parent that counts is the *thread* that started the child: start children from a thread
that lives as long as they should (the main thread, the event loop's, a supervisor's).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["command", "hold_on"]

log = logging.getLogger("creditgate")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("setpriv")


def command(argv: Sequence[str], sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """``argv`` wrapped so that the child gets ``sig`` when the starting thread dies.

    ``argv`` itself when setpriv is missing (logged once at warning level).
    """
    setpriv = _setpriv()
    if setpriv is None:
        _warn_missing()
        return list(argv)
    return [setpriv, "--pdeathsig", sig.name.removeprefix("SIG"), "--", *argv]


@functools.cache
def _warn_missing() -> None:
    log.warning(
        "setpriv (util-linux) not found: child processes will not die with this one if it is "
        "killed; a stale embedded redis-server is stopped at the next start"
    )


def hold_on(parent: int, sig: signal.Signals = signal.SIGTERM) -> bool:
    """In a child: ask for ``sig`` when the parent dies; False if ``parent`` is gone already.

    ``parent`` is the pid of the process that started this one. Checked after the request, so
    a parent that died before it is seen (this process was then reparented). Outside Linux it
    only checks the parent.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    return os.getppid() == parent
