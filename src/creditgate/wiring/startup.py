"""Start-up failures as one line an operator can act on.

Everything here raises ``ConfigError``, which ``creditgate serve`` prints as one line and exit
status 2: a port that cannot be bound (and why, asked of the kernel with a plain socket, since
gRPC only says that it failed), a ledger that does not answer.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sqlite3
from typing import TYPE_CHECKING

from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    import grpc

    from creditgate.ledger.store import LedgerStore

__all__ = ["add_port", "bind_failure", "open_ledger_or_explain"]

_ADVICE = {
    errno.EADDRINUSE: "another process listens there (another sidecar?): stop it or pick another "
    "port",
    errno.EADDRNOTAVAIL: "no network interface of this host has that address",
    errno.EACCES: "ports below 1024 need privileges: pick a port above 1023",
}


def bind_failure(exc: OSError) -> str:
    """What a failed bind means and what to do about it, in words."""
    reason = exc.strerror or str(exc)
    advice = _ADVICE.get(exc.errno or 0)
    return f"{reason}: {advice}" if advice else reason


def _why_not(address: str, *, reuse_port: bool) -> str | None:
    """Why ``host:port`` cannot be bound (None: it can), from binding a plain socket to it.

    Like gRPC, one address of a host name that binds is enough.
    """
    if address.startswith("unix"):
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, ValueError) as exc:
        return f"cannot resolve {host!r} ({exc})"
    problem = None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                problem = problem or bind_failure(exc)
            else:
                return None
    return problem


def add_port(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    setting: str,
    *,
    reuse_port: bool = False,
) -> int:
    """``add_secure_port`` / ``add_insecure_port``; a failure is ConfigError naming ``setting``.

    The address is tried with a plain socket first, which says why it cannot be bound (gRPC only
    says that it failed, on stderr, in a line of its own).
    """
    problem = _why_not(address, reuse_port=reuse_port)
    if problem is not None:
        msg = f"cannot listen on {setting}={address}: {problem}"
        raise ConfigError(msg)
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # recent grpcio raises where older versions return 0
        port = 0
    if port == 0:
        msg = f"cannot listen on {setting}={address} (GRPC_VERBOSITY=debug tells why)"
        raise ConfigError(msg)
    return port


async def open_ledger_or_explain(url: str, *, migrate: bool) -> LedgerStore:
    """The ledger, migrated when asked and seen to answer; ConfigError naming the URL if not."""
    from creditgate.ledger.open import open_ledger, without_password  # noqa: PLC0415
    from creditgate.ledger.store import LedgerError  # noqa: PLC0415

    store = None
    try:
        store = await open_ledger(url, migrate=migrate)
        await store.ping()
    except ValueError as exc:  # a URL of no known kind
        raise ConfigError(str(exc)) from None
    except (LedgerError, OSError, sqlite3.Error) as exc:
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        msg = (
            f"the ledger at {without_password(url)} does not answer ({exc}): start it or correct "
            "CREDITGATE_LEDGER_URL (empty: serve without a ledger)"
        )
        raise ConfigError(msg) from None
    return store
