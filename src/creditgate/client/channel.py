"""How a client reaches the sidecar: plaintext, TLS, or mutual TLS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from creditgate.domain.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["ClientTLS", "client_channel"]


@dataclass(frozen=True)
class ClientTLS:
    """How a client connects: trusted CA (None: the system's), and its own certificate for mTLS.

    ``server_name`` overrides the name checked against the server's certificate (dialling an
    address the certificate does not name).
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            msg = "a client certificate needs its key, and a key its certificate"
            raise ConfigError(msg)
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.read_bytes() if self.ca else None,
                private_key=self.key.read_bytes() if self.key else None,
                certificate_chain=self.cert.read_bytes() if self.cert else None,
            )
        except OSError as exc:
            msg = f"client TLS file: {exc}"
            raise ConfigError(msg) from None


def client_channel(
    target: str,
    tls: ClientTLS | None = None,
    options: Sequence[tuple[str, str | int]] = (),
) -> grpc.aio.Channel:
    """A channel to the sidecar: plaintext without ``tls``, else TLS (mutual with a cert)."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    opts = list(options)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, tls.credentials(), options=opts)
