"""What Envoy's two filters share: one charge through ``engine.consume`` and how it is shown.

Both the rate-limit service (envoy_ratelimit.py) and the external authorization service
(envoy_ext_authz.py) turn an HTTP request into one ``Charge`` (domain/gateway.py) and make it
with ``charge``; a request creditgate cannot bill comes back as ``Refused`` (never a gRPC
error, so that a fail-open filter cannot let it through), and Redis down is raised
(UNAVAILABLE or DEADLINE_EXCEEDED: the filter's failure mode decides).

A charge's phase (domain/gateway_base.Phase) picks the engine call: ``consume``, ``reserve``
(a hold under the request id), ``settle`` or ``release`` (the hold, when the stream is done).
When Redis is down and the action's ``on_unavailable`` is ``allow``, the request comes back as
``Unbilled`` (fail_policy.py). A request id seen before is ``Refused`` (``DUPLICATE_REQUEST_ID``):
unlike an SDK caller's retry, a gateway's request reaches the app again.

``figures`` gives the RateLimit-Limit, -Remaining and -Reset of a decision, and ``body`` the JSON
body of a refusal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from envoy.config.core.v3 import base_pb2

from creditgate.domain.errors import CreditgateError, UnavailableError
from creditgate.domain.gateway_base import MappingError, Phase
from creditgate.domain.money import MICRO
from creditgate.domain.requests import is_valid_id
from creditgate.domain.results import Decision, Settlement
from creditgate.domain.wording import utc
from creditgate.transport import metrics
from creditgate.transport.errors import status_of
from creditgate.transport.fail_policy import decided_without_redis
from creditgate.transport.guard import current, require_account
from creditgate.transport.quota import bound_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from creditgate.domain.gateway_base import Charge
    from creditgate.domain.results import Release
    from creditgate.engine import Engine

log = logging.getLogger("creditgate.transport")
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Outcome: TypeAlias = "Decision | Settlement | Release"
_UINT32 = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Refused:
    """A request that cannot be billed: ``reason`` (a mapping reason or a status name)."""

    reason: str
    message: str
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Unbilled:
    """Let through without Redis: the action's ``on_unavailable`` is ``allow``."""

    asked: Charge
    request_id: str


def header(key: str, value: object) -> Any:  # noqa: ANN401 - a HeaderValue
    return base_pb2.HeaderValue(key=key, value=str(value))


def units(micro: int) -> int:
    """Whole units for a header or a uint32 field (floor, at most 2**32-1)."""
    return min(max(micro, 0) // MICRO, _UINT32)


def figures(d: Decision) -> tuple[int, int, int]:
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
    return units(limit), units(remaining), reset


def body(reason: str, message: str, request_id: str, retry_at: int = 0) -> bytes:
    """The JSON body of a refusal (docs/ENVOY.md)."""
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


async def _make(engine: Engine, asked: Charge, rid: str) -> Outcome:
    """The engine call of the charge's phase."""
    if asked.phase is Phase.SETTLE:
        return await engine.settle(asked.account_id, rid, asked.quantity)
    if asked.phase is Phase.RELEASE:
        return await engine.release(asked.account_id, rid)
    if asked.phase is Phase.RESERVE:
        return await engine.reserve(
            asked.account_id,
            asked.action,
            asked.quantity,
            asked.attributes,
            rid,
            asked.hold_ttl_seconds,
        )
    return await engine.consume(
        asked.account_id,
        asked.action,
        asked.quantity,
        asked.attributes,
        rid,
        dry_run=asked.dry_run,
    )


def _count(rpc: str, done: Outcome) -> None:
    if isinstance(done, Decision):
        metrics.decided(rpc, done.reason)
    elif isinstance(done, Settlement):
        outcome = "settled" if done.fully_charged else "short"
        metrics.GATEWAY_HOLDS.labels(rpc, outcome).inc()
    else:
        metrics.GATEWAY_HOLDS.labels(rpc, "released").inc()


async def charge(
    engine: Engine, context: Ctx, rpc: str, mapped: Callable[[], Charge]
) -> tuple[Charge, Outcome] | Refused | Unbilled:
    """Make the charge ``mapped()`` describes; Refused when it cannot be billed.

    ``rpc`` labels the decision in the metrics. UnavailableError (Redis) is raised, or, when
    the action's ``on_unavailable`` is ``allow`` and the request comes in (not a stream that
    is done), answered ``Unbilled``.
    """
    rid = ""
    asked: Charge | None = None
    try:
        asked = mapped()
        require_account(current(), asked.account_id)
        rid = bound_id(engine, asked.request_id, context, dry_run=asked.dry_run)
        done = await _make(engine, asked, rid)
    except UnavailableError:
        # Redis: a gRPC error, so that Envoy's failure mode decides, unless the action says allow
        coming = (Phase.CHARGE, Phase.RESERVE)  # a stream that is done is not let through
        if (
            asked is not None
            and asked.phase in coming
            and decided_without_redis(engine.catalog, rpc, asked.action)
        ):
            return Unbilled(asked, rid)
        raise
    except MappingError as exc:
        if exc.reason == "NOT_HELD":  # a stream done whose request made no hold
            metrics.GATEWAY_HOLDS.labels(rpc, "not_held").inc()
        given = exc.request_id if is_valid_id(exc.request_id) else ""
        return Refused(exc.reason, str(exc), given)
    except CreditgateError as exc:
        if asked is not None and asked.phase in (Phase.SETTLE, Phase.RELEASE):
            metrics.GATEWAY_HOLDS.labels(rpc, "missing").inc()
        code, message = status_of(exc)
        return Refused(code.name, message, rid if is_valid_id(rid) else "")
    if asked.bad_usage:
        metrics.GATEWAY_HOLDS.labels(rpc, "bad_usage").inc()
        log.warning(
            "hold %s of %s: the usage %r is not a count; charged the estimate (%d)",
            rid,
            asked.account_id,
            asked.bad_usage,
            asked.quantity,
        )
    if isinstance(done, Decision) and done.replayed:
        # An HTTP request that gets this far reaches the app: an id seen before would let it
        # run again, uncharged. The SDK's replays are retries of one action; a gateway's are not.
        return Refused("DUPLICATE_REQUEST_ID", _duplicate(rid), rid)
    _count(rpc, done)
    return asked, done


def _duplicate(rid: str) -> str:
    return (
        f"request id {rid!r} was already used by an earlier request of this account, which was "
        "charged; each request must carry a new id (let Envoy make x-request-id, and do not "
        "pass on one a client sent), or it would reach the app again without a charge"
    )
