"""envoy.service.ratelimit.v3.RateLimitService: Envoy's rate-limit filter asks before a request.

``ShouldRateLimit`` maps the request's domain and descriptors to one charge (the plans file's
``gateway.envoy_rate_limit``, domain/gateway.py) and makes it through ``engine.consume``, the
path of CheckAndConsume, fast path included. The answer:

- ``OK`` when the charge passed, ``OVER_LIMIT`` on any denial: out of credits, a spend cap, a
  suspended account, and also a request the mapping cannot bill (unknown domain, no account
  entry) or that the engine refuses (a malformed id, an unknown account): a request creditgate
  cannot bill is never let through, whatever Envoy's failure mode;
- the charging descriptor's status carries ``limit_remaining``, ``current_limit`` and
  ``duration_until_reset``; the response headers ``RateLimit-Limit``, ``RateLimit-Remaining``,
  ``RateLimit-Reset``, ``x-creditgate-reason`` and ``x-creditgate-request-id``; a denial a JSON
  ``raw_body`` (reason, message, retry_at, request id).

Redis down is a gRPC error (UNAVAILABLE, or DEADLINE_EXCEEDED when the outcome is unknown), so
the filter's ``failure_mode_deny`` decides. Limits and remaining are whole units of the action's
meter (``_figures``): only pools the charge moved are read, so a ``service`` token shows no
balance it may not see.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2

from creditgate.domain.errors import CreditgateError, UnavailableError
from creditgate.domain.gateway import Descriptor, MappingError
from creditgate.domain.money import MICRO
from creditgate.domain.requests import is_valid_id
from creditgate.domain.results import Reason
from creditgate.domain.wording import utc
from creditgate.transport import metrics
from creditgate.transport.errors import boundary, status_of
from creditgate.transport.guard import current, require_account
from creditgate.transport.quota import bound_id

if TYPE_CHECKING:
    from creditgate.domain.results import Decision
    from creditgate.engine import Engine

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"]
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
_UINT32 = 2**32 - 1
_ALLOWED = metrics.decided_counter("ratelimit", Reason.ALLOWED)


def descriptors(request: Any) -> tuple[Descriptor, ...]:  # noqa: ANN401 - a RateLimitRequest
    return tuple(
        Descriptor(
            tuple((e.key, e.value) for e in d.entries),
            d.hits_addend.value if d.HasField("hits_addend") else None,
        )
        for d in request.descriptors
    )


def _header(key: str, value: object) -> Any:  # noqa: ANN401 - a HeaderValue
    return base_pb2.HeaderValue(key=key, value=str(value))


def _units(micro: int) -> int:
    """Whole units for a header or a uint32 field (floor, at most 2**32-1)."""
    return min(max(micro, 0) // MICRO, _UINT32)


def _figures(d: Decision) -> tuple[int, int, int]:
    """(limit, remaining, seconds to reset) of a decision, as the headers show them.

    Allowed: remaining is what the credit pools that paid hold after the call, and the limit
    that plus what the call took from them (a dry run took nothing: both are the limit).
    Denied: both are what the pools that accept the request hold (the cost less the
    shortfall), 0 when the denial is not about credits.
    """
    if d.allowed:
        paid = {m.pool_id for m in d.debits if m.unit == d.meter}
        after = sum(b.remaining for b in d.balances if b.pool_id in paid)
        limit = after + sum(m.amount for m in d.debits if m.pool_id in paid)
        remaining = limit if d.dry_run else after  # a dry run's figures are what it would leave
    else:
        limit = remaining = d.cost - d.shortfall if d.shortfall else 0
    reset = -(-(d.retry_at - d.now) // 1000) if d.retry_at > d.now else 0
    return _units(limit), _units(remaining), reset


def _body(reason: str, message: str, request_id: str, retry_at: int = 0) -> bytes:
    return json.dumps(
        {
            "reason": reason,
            "message": message,
            "retry_at": utc(retry_at) if retry_at else None,
            "retry_at_unix_ms": retry_at,
            "request_id": request_id,
        },
        separators=(",", ":"),
    ).encode()


def answer(d: Decision, index: int, count: int) -> Any:  # noqa: ANN401 - a RateLimitResponse
    """The response to a decision on descriptor ``index`` of ``count``."""
    code = OK if d.allowed else OVER_LIMIT
    limit, remaining, reset = _figures(d)
    status = rls_pb2.RateLimitResponse.DescriptorStatus(
        code=code,
        current_limit=rls_pb2.RateLimitResponse.RateLimit(
            name=d.meter, requests_per_unit=limit, unit=rls_pb2.RateLimitResponse.RateLimit.UNKNOWN
        ),
        limit_remaining=remaining,
    )
    if reset:
        status.duration_until_reset.CopyFrom(duration_pb2.Duration(seconds=reset))
    statuses = [rls_pb2.RateLimitResponse.DescriptorStatus(code=OK) for _ in range(count)]
    statuses[index] = status
    reason = "ALLOWED" if d.allowed else d.reason.name
    headers = [
        _header("RateLimit-Limit", limit),
        _header("RateLimit-Remaining", remaining),
        _header("RateLimit-Reset", reset),
        _header("x-creditgate-reason", reason),
        _header("x-creditgate-request-id", d.request_id),
    ]
    response = rls_pb2.RateLimitResponse(
        overall_code=code, statuses=statuses, response_headers_to_add=headers
    )
    if d.allowed:
        # The upstream learns the id it may refund (Refund takes the account and this id).
        response.request_headers_to_add.append(_header("x-creditgate-request-id", d.request_id))
    else:
        response.response_headers_to_add.append(_header("content-type", "application/json"))
        response.raw_body = _body(reason, d.message, d.request_id, d.retry_at)
    return response


def refusal(reason: str, message: str, count: int, request_id: str = "") -> Any:  # noqa: ANN401
    """OVER_LIMIT for a request that cannot be billed; every descriptor is over its limit."""
    headers = [
        _header("RateLimit-Limit", 0),
        _header("RateLimit-Remaining", 0),
        _header("RateLimit-Reset", 0),
        _header("x-creditgate-reason", reason),
        _header("content-type", "application/json"),
    ]
    if request_id:
        headers.append(_header("x-creditgate-request-id", request_id))
    return rls_pb2.RateLimitResponse(
        overall_code=OVER_LIMIT,
        statuses=[rls_pb2.RateLimitResponse.DescriptorStatus(code=OVER_LIMIT)] * count,
        response_headers_to_add=headers,
        raw_body=_body(reason, message, request_id),
    )


class RateLimitService:
    """Envoy's rate-limit service over the engine; the plans file says how requests map."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @boundary
    async def ShouldRateLimit(self, request: Any, context: Ctx) -> Any:  # noqa: ANN401
        found = descriptors(request)
        rid = ""
        try:
            mapping = self.engine.catalog.gateway.mapping(request.domain)
            charge = mapping.charge(found, request.hits_addend)
            require_account(current(), charge.account_id)
            rid = bound_id(self.engine, charge.request_id, context, dry_run=charge.dry_run)
            d = await self.engine.consume(
                charge.account_id,
                charge.action,
                charge.quantity,
                charge.attributes,
                rid,
                dry_run=charge.dry_run,
            )
        except UnavailableError:
            raise  # Redis: a gRPC error, so that Envoy's failure mode decides
        except MappingError as exc:
            return refusal(exc.reason, str(exc), len(found))
        except CreditgateError as exc:
            code, message = status_of(exc)
            return refusal(code.name, message, len(found), rid if is_valid_id(rid) else "")
        if d.allowed:
            _ALLOWED.inc()
        else:
            metrics.decided("ratelimit", d.reason)
        return answer(d, charge.index, len(found))
