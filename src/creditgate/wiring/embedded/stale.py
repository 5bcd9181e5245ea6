"""Find and stop a redis-server left running on an embedded data dir by an earlier sidecar.

A ``serve --embedded`` killed with SIGKILL before its redis-server had PR_SET_PDEATHSIG (or on a
system without it) left that server running, reparented to PID 1 or a subreaper, still serving
the socket and appending to the AOF. The next start finds it here: by the ``--dir`` argument of
every redis-server in ``/proc`` (Linux) and by the pid the socket reports in ``INFO server``.

A server whose parent is a running ``creditgate serve`` belongs to that sidecar and is never
touched; any other is stale and is stopped with SIGTERM, on which redis-server flushes its AOF.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisProcess", "find_servers", "stop_server"]

_PROC = Path("/proc")
_GONE_POLL_SECONDS = 0.05
_SERVER_NAMES = frozenset({"redis-server", "valkey-server"})  # what the embedded server runs


@dataclass(frozen=True)
class RedisProcess:
    """A redis-server serving a data dir: its pid, its parent's, and whether a sidecar owns it."""

    pid: int
    parent: int | None
    owned_by_sidecar: bool


def find_servers(data_dir: Path, socket_path: Path) -> list[RedisProcess]:
    """The redis-servers running on ``data_dir`` or answering on ``socket_path``."""
    pids = set(_pids_by_dir(data_dir))
    reported = _pid_on_socket(socket_path)
    if reported is not None:
        pids.add(reported)
    found = []
    for pid in sorted(pids):
        parent = _parent_of(pid)
        sidecar = parent is not None and parent != 1 and _is_sidecar(parent)
        found.append(RedisProcess(pid, parent, owned_by_sidecar=sidecar))
    return found


def stop_server(pid: int, grace: float) -> bool:
    """SIGTERM ``pid``, SIGKILL it after ``grace`` seconds; True once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for sig in (signal.SIGKILL, None):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if _gone(pid):
                return True
            time.sleep(_GONE_POLL_SECONDS)
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return _gone(pid)


def _argv(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pids_by_dir(data_dir: Path) -> list[int]:
    """redis-servers whose ``--dir`` is ``data_dir`` (none where there is no /proc)."""
    if not _PROC.is_dir():
        return []
    wanted = str(data_dir)
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        argv = _argv(int(entry.name))
        if not argv or Path(argv[0]).name not in _SERVER_NAMES:
            continue
        pairs = itertools.pairwise(argv)
        if any(flag == "--dir" and value == wanted for flag, value in pairs):
            found.append(int(entry.name))
    return [pid for pid in found if not _gone(pid)]


def socket_client(socket_path: Path) -> redis.Redis:
    """A client for one question to the server on ``socket_path``, asked once.

    redis-py retries a failed connection with backoff by default: seconds spent on a socket
    nobody listens on, which is exactly what a restart after a crash finds.
    """
    return redis.Redis(
        unix_socket_path=str(socket_path), socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


def _pid_on_socket(socket_path: Path) -> int | None:
    if not socket_path.exists():
        return None
    client = socket_client(socket_path)
    try:
        info = client.info("server")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    pid = info.get("process_id")
    return pid if isinstance(pid, int) and pid > 0 else None


def _stat(pid: int) -> list[str]:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    # The command name in parentheses may hold spaces; the fields after it do not.
    return text.rsplit(")", 1)[-1].split()


def _parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for a parent that is not us to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    fields = _stat(pid)
    return bool(fields) and fields[0] in {"Z", "X"}


def _is_sidecar(pid: int) -> bool:
    """Whether ``pid`` runs ``creditgate serve`` (as the console script or ``-m creditgate``)."""
    argv = _argv(pid)
    if "serve" not in argv:
        return False
    by_module = any(a == "-m" and b == "creditgate" for a, b in itertools.pairwise(argv))
    return by_module or any(Path(arg).name == "creditgate" for arg in argv)
