"""Safe exposure: who may reach the server, decided once at start from the settings.

Without a tokens file the server is open to any caller, so it may only listen on loopback;
another address needs tokens (``CREDITGATE_AUTH=tokens`` or an existing tokens file) or an
explicit ``CREDITGATE_AUTH=none``, which is warned about at every start. /metrics listens on the
gRPC host unless ``CREDITGATE_METRICS_HOST`` says otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from prometheus_client import start_http_server

from creditgate.auth.tokens import TokenStore
from creditgate.domain.errors import ConfigError
from creditgate.transport import metrics
from creditgate.wiring.startup import bind_failure

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from creditgate.wiring.settings import Settings

log = logging.getLogger("creditgate.auth")


def listen_host(listen: str) -> str:
    """The host part of a gRPC listen address; a unix socket counts as loopback."""
    if listen.startswith("unix"):
        return "127.0.0.1"
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or an empty host (every address)
        return False


def token_store_for(settings: Settings) -> TokenStore | None:
    """The tokens the settings ask callers for, or None; ConfigError if the exposure is unsafe."""
    path = settings.tokens_path()
    mode = settings.auth or ("tokens" if path.exists() else "")
    if mode == "tokens":
        if not path.exists():
            msg = (
                f"CREDITGATE_AUTH=tokens but there is no tokens file at {path}: create a token "
                "with `creditgate token create --name NAME --role ROLE` or set "
                "CREDITGATE_TOKENS_FILE"
            )
            raise ConfigError(msg)
        store = TokenStore(path)
        log.info("auth: bearer tokens from %s (%d tokens)", path, len(store.entries()))
        return store
    if mode == "none":
        log.warning(
            "CREDITGATE_AUTH=none: anyone who reaches %s may call every RPC, grants included",
            settings.listen,
        )
        return None
    if not is_loopback(listen_host(settings.listen)):
        msg = (
            f"refusing to listen on {settings.listen} without auth: create tokens "
            f"(`creditgate token create`, file {path}) or set CREDITGATE_AUTH=none"
        )
        raise ConfigError(msg)
    log.info("auth off (no tokens file at %s): listening on loopback only", path)
    return None


def metrics_host(settings: Settings) -> str:
    return settings.metrics_host or listen_host(settings.listen)


def start_metrics(settings: Settings) -> WSGIServer:
    """Serve /metrics on ``metrics_host`` and ``metrics_port``; the server is returned.

    Raises:
        ConfigError: the port cannot be bound (one line: why, and what to do).
    """
    host = metrics_host(settings)
    try:
        server, _thread = start_http_server(
            settings.metrics_port, addr=host, registry=metrics.registry()
        )
    except OSError as exc:
        msg = (
            f"cannot serve /metrics on {host}:{settings.metrics_port} "
            f"(CREDITGATE_METRICS_PORT): {bind_failure(exc)}; CREDITGATE_METRICS_PORT=0 turns "
            "it off"
        )
        raise ConfigError(msg) from None
    return server
