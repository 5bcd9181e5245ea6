"""The one place where errors become gRPC status codes.

Quota denials never come here: they are answers (``allowed = false``). A backend that cannot be
reached is UNAVAILABLE (nothing was sent, nothing changed), never UNKNOWN, so callers know a
retry may succeed. A command sent to Redis that got no answer is DEADLINE_EXCEEDED: it may have
been applied, so only a retry with the same request id is safe. The id a charge runs under
(generated when the caller sent none) is returned on every outcome, in the trailing metadata
``x-creditgate-request-id`` and, on an error, in a ``google.rpc.ErrorInfo`` detail.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.domain import errors
from creditgate.transport import metrics
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
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.OutcomeUnknownError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
}


REQUEST_ID_KEY = "x-creditgate-request-id"
ERROR_DOMAIN = "creditgate.v1"


class Malformed:
    """Stands in for a request whose bytes are not a valid message (bad UTF-8, truncation).

    ``code`` is INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for a request larger than its method
    needs (refused before it is parsed); ``reason`` is then the whole message.
    """

    def __init__(
        self, reason: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    ) -> None:
        self.reason = reason
        self.code = code

    @property
    def message(self) -> str:
        if self.code is grpc.StatusCode.INVALID_ARGUMENT:
            return f"the request is not a valid message: {self.reason}"
        return self.reason


def bind_request_id(context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    """Return ``request_id`` on every outcome of this call (trailing metadata)."""
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str
) -> None:
    """Abort with ``code``; a bound request id also goes into an ErrorInfo detail."""
    trailing = tuple(context.trailing_metadata() or ())
    request_id = next((str(v) for k, v in trailing if k == REQUEST_ID_KEY), "")
    if not request_id:
        await context.abort(code, message)
    info = error_details_pb2.ErrorInfo(
        reason=_REASONS.get(code, code.name),
        domain=ERROR_DOMAIN,
        metadata={"request_id": request_id},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )
    await context.abort(code, message, (*trailing, *status.trailing_metadata))


# ErrorInfo reasons where the status code alone does not say what happened.
_REASONS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "OUTCOME_UNKNOWN",
    grpc.StatusCode.UNAVAILABLE: "NOT_APPLIED",
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errors.CreditgateError):
        for cls in type(exc).__mro__:
            code = STATUS.get(cls)
            if code is not None:
                return code, str(exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ReadOnlyError | OSError):
        # Not through engine.failures (which tells sent from not sent): loading, or a replica
        # after failover. A retry may succeed.
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
            metrics.latency(fn.__name__, request.code.name).observe(time.perf_counter() - start)
            await context.abort(request.code, request.message)
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
            await _abort(context, code, message)
        ok.observe(time.perf_counter() - start)
        return response

    return wrapper
