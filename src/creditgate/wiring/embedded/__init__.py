"""The private redis-server (or valkey-server) of ``serve --embedded``.

Which binary (``binary``), start and stop (``redis``), stale servers left by an earlier run
(``stale``), and restarts while the sidecar runs (``supervisor``).
"""

from creditgate.wiring.embedded.redis import EmbeddedRedis, EmbeddedRedisError, find_redis_server

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "find_redis_server"]
