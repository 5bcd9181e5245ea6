"""Whether a failed Redis call may have changed anything.

A call that never reached Redis (the connection could not be made, or was down before the
command was written) changed nothing: ``UnavailableError``, and a retry is always safe. A call
whose command was written but whose reply never came (a paused or overloaded Redis, a
connection dropped while waiting) may have run: ``OutcomeUnknownError``, and only a retry with
the same request id is safe.

The pipelined connection (fastpath) says which by the exception it fails a call with
(``UnansweredError`` once written). For redis-py, connections of the pool mark the call's
``_WRITTEN`` flag (a context variable, set per call by ``guarded``) just before they write.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain.errors import OutcomeUnknownError, UnavailableError
from creditgate.driver.wire import NotReplicatedError, UnansweredError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from redis.asyncio import ConnectionPool

T = TypeVar("T")
# The current call's flag: [True] once a command of it was written to a socket.
_WRITTEN: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "creditgate_redis_written", default=None
)
FAILURES = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


class _MarksWrites:
    """Mixed into the pool's connection class: flags the call before its command is written."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:  # noqa: ANN401, FBT001, FBT002 - redis-py's signature
        if not self.is_connected:  # type: ignore[attr-defined]  # the connection class's
            await self.connect()  # type: ignore[attr-defined]  # a failure here: nothing sent
        flag = _WRITTEN.get()
        if flag is not None:
            flag[0] = True
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


def _marked(cls: type[Any]) -> type[Any]:
    if issubclass(cls, _MarksWrites):
        return cls
    return type(f"Marked{cls.__name__}", (_MarksWrites, cls), {})


def track_writes(pool: ConnectionPool) -> None:
    """Make ``pool``'s connections flag each call before writing (see ``guarded``)."""
    pool.connection_class = _marked(pool.connection_class)


def track_cluster_writes(client: Any) -> None:  # noqa: ANN401 - redis-py's RedisCluster
    """The same for a Redis Cluster client: its seed nodes, and every node it learns later.

    redis-py makes the nodes it discovers from the client's ``connection_kwargs`` (one dict,
    shared with its nodes manager), so the marked class set there reaches them too.
    """
    kwargs = client.connection_kwargs
    kwargs["connection_class"] = _marked(kwargs["connection_class"])
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = _marked(node.connection_class)


def failure(exc: BaseException, *, sent: bool) -> UnavailableError:
    """The domain error for a Redis call that failed with ``exc``."""
    if isinstance(exc, NotReplicatedError):
        return OutcomeUnknownError(
            f"the Redis master ran the call, but {exc}: its answer is withheld, as a failover "
            "could lose what it changed; retry with the same request_id, which never charges "
            "twice"
        )
    if sent or isinstance(exc, UnansweredError):
        return OutcomeUnknownError(
            f"Redis did not answer ({exc}) after the command was sent: it may have been "
            "applied; retry with the same request_id, which never charges twice"
        )
    return UnavailableError(
        f"Redis could not be reached ({exc}); nothing was sent, so nothing changed: retry"
    )


async def guarded(call: Awaitable[T]) -> T:
    """Await a redis-py call; a failure becomes UnavailableError or OutcomeUnknownError."""
    flag = [False]
    token = _WRITTEN.set(flag)
    try:
        return await call
    except FAILURES as exc:
        raise failure(exc, sent=flag[0]) from exc
    finally:
        _WRITTEN.reset(token)
