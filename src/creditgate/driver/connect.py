"""Redis clients from a URL: the one place ``redis://``, ``rediss://`` and ``unix://`` are read.

redis-py reads the URL for its own pool, TLS parameters included (``rediss://host:6380/0?
ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=required``).
The pipelined connection (``FastRedis``) opens its own sockets; ``tls_context`` hands it the
context redis-py builds from the same URL, so both clients trust and present the same things.
"""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import RedisError

from creditgate.domain.errors import ConfigError


def tls_context(url: str) -> ssl.SSLContext | None:
    """The TLS context redis-py uses for ``url``; None unless it is ``rediss://``.

    Raises ConfigError (one line, without the URL, which may hold a password) when a TLS
    parameter names a file that is missing or not PEM, or a value redis-py does not know.
    """
    try:
        kwargs = parse_url(url)
        if kwargs.get("connection_class") is not SSLConnection:
            return None
        # Only the ssl_* parameters: an SSLConnection made for its context never connects.
        tls: dict[str, Any] = {k: v for k, v in kwargs.items() if k.startswith("ssl_")}
        context: ssl.SSLContext = SSLConnection(**tls).ssl_context.get()
    except (ValueError, TypeError, OSError, ssl.SSLError, RedisError) as exc:
        msg = f"Redis URL TLS parameters: {exc}"
        raise ConfigError(msg) from None
    return context


def redis_client(url: str, *, timeout: float, max_connections: int | None = None) -> Redis:
    """A redis-py client for ``url`` with ``timeout`` on connecting and on every command.

    With ``max_connections``, callers beyond it wait up to ``timeout`` for a connection (the
    server's pool); without, connections are made as needed (the CLI's ledger commands).
    A bad TLS parameter is a ConfigError here, at start, not on the first call. For a Redis
    Cluster, ``driver.cluster.cluster_client``.
    """
    tls_context(url)
    if max_connections is None:
        return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        timeout=timeout,
    )
    return Redis.from_pool(pool)  # closing the client closes its pool
