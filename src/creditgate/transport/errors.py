"""The one place where errors become gRPC status codes.

Quota denials never come here: they are answers (``allowed = false``). A backend that cannot be
reached is UNAVAILABLE, never UNKNOWN, so callers know a retry may succeed.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate import metrics
from creditgate.domain import errors
from creditgate.transport.health import redis_failed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("creditgate.transport")

STATUS: dict[type[errors.CreditgateError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
}


class Malformed:
    """Stands in for a request whose bytes are not a valid message (bad UTF-8, truncation)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errors.CreditgateError):
        for cls in type(exc).__mro__:
            code = STATUS.get(cls)
            if code is not None:
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ReadOnlyError | OSError):
        # Unreachable, timed out, loading, or a replica after failover: a retry may succeed.
        return grpc.StatusCode.UNAVAILABLE, f"Redis failed ({exc}); retry"
    if isinstance(exc, RedisError):
        return grpc.StatusCode.INTERNAL, "Redis refused a script call; see the server log"
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def boundary(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Wrap a servicer method: malformed requests and errors become statuses here."""
    ok = metrics.latency(fn.__name__)

    @functools.wraps(fn)
    async def wrapper(
        self: Any,  # noqa: ANN401 - any servicer
        request: Req,
        context: grpc.aio.ServicerContext[Req, Resp],
    ) -> Resp:
        start = time.perf_counter()
        if isinstance(request, Malformed):
            metrics.latency(fn.__name__, "INVALID_ARGUMENT").observe(time.perf_counter() - start)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid message: {request.reason}",
            )
        try:
            response = await fn(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_of(exc)
            await redis_failed(exc)  # Redis down: health NOT_SERVING before this call's answer
            if code is grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", fn.__name__)
            metrics.latency(fn.__name__, code.name).observe(time.perf_counter() - start)
            await context.abort(code, message)
        ok.observe(time.perf_counter() - start)
        return response

    return wrapper
