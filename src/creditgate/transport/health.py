"""grpc.health.v1 for probes: liveness reflects the process, readiness reflects Redis.

- ``liveness`` is SERVING from the moment the server starts until it shuts down, whatever Redis
  does: a Redis outage must take sidecars out of load balancing, not restart them all.
- ``""`` and each creditgate service name are readiness: SERVING while Redis answers.

Readiness follows Redis two ways. A poll PINGs it every ``period`` seconds and sets health and
the ``creditgate_redis_up`` gauge either way. And the status boundary calls ``redis_failed`` for
every failed RPC: one whose cause is a Redis connection error or timeout flips health to
NOT_SERVING and the gauge to 0 before the failed call is answered; only the poll flips them
back (every 0.25 s while Redis is down).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain.errors import CreditgateError
from creditgate.transport import metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from grpc_health.v1._async import HealthServicer
    from redis.asyncio import Redis

__all__ = ["LIVENESS", "RedisHealth", "redis_failed", "unreachable"]

log = logging.getLogger("creditgate.health")

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WAIT_RETRY_SECONDS = 0.25
_CAUSE_DEPTH = 4

# Every RedisHealth of this process; the status boundary reaches them through redis_failed.
_watching: weakref.WeakSet[RedisHealth] = weakref.WeakSet()


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is Redis not answering: refused, lost or timed out.

    Domain errors are followed to their ``__cause__``: the engine wraps a Redis failure in
    UnavailableError; a ledger failure (or a plan that kept changing) is not Redis down.
    """
    current: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if not isinstance(current, CreditgateError):
            break
        current = current.__cause__
    if current is None or isinstance(current, CreditgateError):
        return False
    if isinstance(current, RedisConnectionError | RedisTimeoutError):
        return True
    # builtin ConnectionError and TimeoutError (the pipelined path) are OSErrors
    return isinstance(current, OSError) and not isinstance(current, RedisError)


async def redis_failed(exc: BaseException) -> None:
    """The status boundary's hook for a failed call: NOT_SERVING at once if Redis is down."""
    if not unreachable(exc):
        return
    for watcher in list(_watching):
        await watcher.down(exc)


class RedisHealth:
    """Sets a HealthServicer's statuses and the creditgate_redis_up gauge from Redis."""

    def __init__(
        self,
        health: HealthServicer,
        redis: Redis,
        services: Sequence[str],
        *,
        period: float = 2.0,
    ) -> None:
        self._health = health
        self._redis = redis
        self._readiness = ("", *services)
        self._period = period
        self.up: bool | None = None  # None: not known yet

    async def start(self) -> None:
        """Liveness SERVING, readiness NOT_SERVING until Redis is seen to answer."""
        _watching.add(self)
        await self._health.set(LIVENESS, SERVING)
        await self._set(up=False)

    async def wait_for_redis(self) -> None:
        """Return once Redis answers PING; says once in the log that it waits, and why."""
        said = False
        while True:
            try:
                await self._redis.ping()
            except (RedisError, OSError) as exc:
                if not said:
                    log.warning(
                        "waiting for Redis at %s (%s); not serving until it answers",
                        self._where(),
                        exc,
                    )
                    said = True
                await asyncio.sleep(_WAIT_RETRY_SECONDS)
                continue
            if said:
                log.info("Redis at %s answers", self._where())
            return

    async def poll(self) -> bool:
        """One PING; health and the gauge follow its outcome. Returns whether Redis answered."""
        try:
            await self._redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not serving
            await self.down(exc)
            return False
        if self.up is not True:
            log.info("Redis answers: serving")
        await self._set(up=True)
        return True

    async def watch(self) -> None:
        """Poll every ``period`` seconds until cancelled; every 0.25 s while Redis is down.

        The quicker poll while down brings a sidecar back into load balancing within a quarter
        of a second of Redis answering again; a failed call has already taken it out.
        """
        try:
            while True:
                up = await self.poll()
                await asyncio.sleep(self._period if up else _WAIT_RETRY_SECONDS)
        finally:
            _watching.discard(self)

    async def down(self, why: BaseException) -> None:
        if self.up is False:
            return
        self.up = False  # before the first await: concurrent failures log once
        log.warning("Redis failed (%s): not serving until it answers a PING", why)
        await self._set(up=False)

    async def _set(self, *, up: bool) -> None:
        self.up = up
        metrics.REDIS_UP.set(1 if up else 0)
        for name in self._readiness:
            await self._health.set(name, SERVING if up else NOT_SERVING)

    def _where(self) -> str:
        """The Redis address without credentials, for the log."""
        pool = getattr(self._redis, "connection_pool", None)
        if pool is None:  # Redis Cluster: a pool per node
            return "the Redis Cluster"
        kwargs = pool.connection_kwargs
        if "path" in kwargs:
            return str(kwargs["path"])
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
