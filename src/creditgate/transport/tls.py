"""TLS for the gRPC port (server credentials that reload) and for clients (channel credentials).

The server's certificate, key and client CA are files, typically a mounted Kubernetes Secret.
gRPC asks ``_Reloader`` for a new configuration at each TLS handshake; it re-reads the files
only when one of them changed (mtime, size or inode), so a rotated Secret takes effect for new
connections without a restart while open connections keep the certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import grpc

from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

log = logging.getLogger("creditgate.tls")


@dataclass(frozen=True)
class _Files:
    """What a server configuration is made of, read in one go."""

    key: bytes
    cert: bytes
    client_ca: bytes | None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], self.client_ca)


def _check(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Raise ConfigError (one line) unless the files make a usable server configuration.

    Python's own TLS stack parses them: the certificate chain, that the key matches it, and the
    client CA bundle.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for path, what in ((cert, "CREDITGATE_TLS_CERT"), (key, "CREDITGATE_TLS_KEY")):
        _readable(path, what)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        msg = (
            f"CREDITGATE_TLS_CERT={cert} / CREDITGATE_TLS_KEY={key}: not a PEM certificate "
            f"chain and its matching private key ({exc})"
        )
        raise ConfigError(msg) from None
    if client_ca is not None:
        _readable(client_ca, "CREDITGATE_TLS_CLIENT_CA")
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            msg = f"CREDITGATE_TLS_CLIENT_CA={client_ca}: not a readable PEM CA bundle ({exc})"
            raise ConfigError(msg) from None


def _readable(path: Path, what: str) -> None:
    """ConfigError (one line) unless ``path`` is a file this process can read."""
    if not path.exists():
        msg = f"{what}={path}: no such file"
        raise ConfigError(msg)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        msg = f"{what}={path}: cannot read it ({exc.strerror}); name a PEM file this user can read"
        raise ConfigError(msg) from None


def _read(cert: Path, key: Path, client_ca: Path | None) -> _Files:
    _check(cert, key, client_ca)
    return _Files(
        key.read_bytes(), cert.read_bytes(), client_ca.read_bytes() if client_ca else None
    )


class _Reloader:
    """gRPC's certificate fetcher: a new configuration when the files changed, else None.

    Runs on gRPC's own threads, hence the lock. A half-written rotation (a certificate that
    does not match the key yet) is logged and skipped; the previous configuration stays.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._paths = (cert, key, client_ca)
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self.initial = _read(cert, key, client_ca).configuration()

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths:
            if path is None:
                continue
            try:
                st = path.stat()  # follows the symlinks a Kubernetes Secret volume swaps
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._stamp()
            if stamp == self._seen:
                return None
            try:
                files = _read(*self._paths)
            except (ConfigError, OSError) as exc:
                log.warning("TLS files changed but cannot be used yet, keeping the old: %s", exc)
                return None
            self._seen = stamp
            log.info("TLS certificate reloaded from %s", self._paths[0])
            return files.configuration()


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``, or None for plaintext (no certificate set).

    With ``client_ca``, clients must present a certificate it signed (mutual TLS). Raises
    ConfigError with one line naming the setting when a file is missing or unusable.
    """
    if cert is None and key is None:
        if client_ca is not None:
            msg = "CREDITGATE_TLS_CLIENT_CA needs CREDITGATE_TLS_CERT and CREDITGATE_TLS_KEY"
            raise ConfigError(msg)
        return None
    if cert is None or key is None:
        msg = "set both CREDITGATE_TLS_CERT and CREDITGATE_TLS_KEY, or neither"
        raise ConfigError(msg)
    reloader = _Reloader(cert, key, client_ca)
    mutual = " (mutual: clients need a certificate from CREDITGATE_TLS_CLIENT_CA)"
    log.info("gRPC TLS on with %s%s", cert, mutual if client_ca else "")
    # The stub types the fetcher as never returning None; gRPC documents None as "no change".
    fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", reloader)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial, fetcher, require_client_authentication=client_ca is not None
    )
