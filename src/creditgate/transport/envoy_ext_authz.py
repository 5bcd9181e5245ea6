"""envoy.service.auth.v3.Authorization: Envoy's external authorization filter asks before a request.

``Check`` maps the HTTP request (method, path, headers; a JWT claim from ``metadata_context``
when configured) to one charge (the plans file's ``gateway.envoy_ext_authz``,
domain/ext_authz.py) and makes it through ``engine.consume`` (envoy_common.charge). The answer:

- allowed: ``ok_response`` with ``x-creditgate-request-id`` and ``x-creditgate-remaining`` to the
  upstream (overwriting any the client sent), and ``RateLimit-*``, ``x-creditgate-reason`` and
  ``x-creditgate-request-id`` to the client; ``dynamic_metadata`` carries the request id, the
  account, the action and what remains (namespace ``envoy.filters.http.ext_authz`` in Envoy);
- refused: ``denied_response`` with the HTTP status of ``HTTP_STATUS`` (402 out of credits, 429
  a spend cap, 403 a suspended, stopped or not entitled account and any request that names no
  known account, 400 a malformed one, 409 a request id reused for another request), the JSON
  body and the ``RateLimit-*`` headers of the rate-limit service (envoy_common).

A route with ``hold`` reserves instead of charging; the id of the hold is the request id, in
the headers and ``dynamic_metadata`` (``hold: <request id>``, ``hold_expires_at_unix_ms``), and the
rate-limit filter applied on stream done settles it (docs/ENVOY.md, the LLM recipe).

Redis down is a gRPC error (UNAVAILABLE, or DEADLINE_EXCEEDED when the outcome is unknown), so
the filter's ``failure_mode_allow`` decides; an action with ``on_unavailable: allow`` is allowed
instead, with ``x-creditgate-reason: UNAVAILABLE_ALLOWED`` and nothing charged (fail_policy.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from creditgate.domain.gateway_base import Phase
from creditgate.domain.results import Decision
from creditgate.transport.envoy_common import (
    Ctx,
    Refused,
    Unbilled,
    body,
    charge,
    figures,
    header,
)
from creditgate.transport.errors import boundary

if TYPE_CHECKING:
    from creditgate.domain.ext_authz import ExtAuthzMapping
    from creditgate.domain.gateway_base import Charge
    from creditgate.engine import Engine

SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The HTTP status of each refusal; any reason not listed is 403.
HTTP_STATUS = {
    "INSUFFICIENT_CREDITS": 402,
    "SPEND_CAP_REACHED": 429,
    "INVALID_ARGUMENT": 400,
    "INVALID_QUANTITY": 400,
    "FAILED_PRECONDITION": 409,
    "DUPLICATE_REQUEST_ID": 409,
}
FORBIDDEN = 403


def _option(key: str, value: object) -> Any:  # noqa: ANN401 - a HeaderValueOption
    return base_pb2.HeaderValueOption(header=header(key, value), append_action=_OVERWRITE)


def _headers(http: Any) -> dict[str, str]:  # noqa: ANN401 - an AttributeContext.HttpRequest
    """The request's headers, lower-case names (``header_map`` when Envoy encodes raw headers)."""
    if http.headers:
        return dict(http.headers)
    return {
        h.key.lower(): h.value or h.raw_value.decode("utf-8", "replace")
        for h in http.header_map.headers
    }


def _claims(mapping: ExtAuthzMapping, attributes: Any) -> dict[str, Any] | None:  # noqa: ANN401
    """The configured claim's metadata namespace as a dict (None: not configured or absent)."""
    if mapping.claim is None:
        return None
    found = attributes.metadata_context.filter_metadata
    namespace = mapping.claim[0]
    return json_format.MessageToDict(found[namespace]) if namespace in found else None


def _rate(limit: int, remaining: int, reset: int, reason: str) -> list[Any]:
    return [
        _option("RateLimit-Limit", limit),
        _option("RateLimit-Remaining", remaining),
        _option("RateLimit-Reset", reset),
        _option("x-creditgate-reason", reason),
    ]


def allowed(asked: Charge, d: Decision | None, request_id: str) -> Any:  # noqa: ANN401
    """The CheckResponse letting a request through; ``d`` None: without Redis (unbilled).

    Unbilled, the upstream gets ``x-creditgate-reason: UNAVAILABLE_ALLOWED`` and no
    ``x-creditgate-remaining`` (one the client sent is removed).
    """
    reason = "ALLOWED" if d is not None else "UNAVAILABLE_ALLOWED"
    upstream = [_option("x-creditgate-request-id", request_id)]
    meta: dict[str, Any] = {
        "request_id": request_id,
        "account_id": asked.account_id,
        "action": asked.action,
        "reason": reason,
    }
    if d is None:
        upstream.append(_option("x-creditgate-reason", reason))
        client = [_option("x-creditgate-reason", reason)]
    else:
        limit, remaining, reset = figures(d)
        upstream.append(_option("x-creditgate-remaining", remaining))
        client = _rate(limit, remaining, reset, reason)
        meta["remaining"] = remaining
        if asked.phase is Phase.RESERVE:
            meta |= {"hold": request_id, "hold_expires_at_unix_ms": d.expires_at}
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=upstream,
            headers_to_remove=[] if d is not None else ["x-creditgate-remaining"],
            response_headers_to_add=[*client, _option("x-creditgate-request-id", request_id)],
        ),
    )
    response.dynamic_metadata.update(meta)
    return response


def denied(
    reason: str,
    message: str,
    request_id: str,
    retry_at: int = 0,
    figured: tuple[int, int, int] = (0, 0, 0),
) -> Any:  # noqa: ANN401 - a CheckResponse
    limit, remaining, reset = figured
    headers = [*_rate(limit, remaining, reset, reason), _option("content-type", "application/json")]
    if request_id:
        headers.append(_option("x-creditgate-request-id", request_id))
    if reset:
        headers.append(_option("retry-after", reset))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=HTTP_STATUS.get(reason, FORBIDDEN)),
            headers=headers,
            body=body(reason, message, request_id, retry_at).decode(),
        ),
    )


class AuthorizationService:
    """Envoy's external authorization over the engine; the plans file says how requests map."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _charge(self, request: Any) -> Charge:  # noqa: ANN401 - a CheckRequest
        mapping = self.engine.catalog.gateway.authz()
        attributes = request.attributes
        http = attributes.request.http
        return mapping.charge(http.method, http.path, _headers(http), _claims(mapping, attributes))

    @boundary
    async def Check(self, request: Any, context: Ctx) -> Any:  # noqa: ANN401
        done = await charge(self.engine, context, "ext_authz", lambda: self._charge(request))
        if isinstance(done, Refused):
            return denied(done.reason, done.message, done.request_id)
        if isinstance(done, Unbilled):
            return allowed(done.asked, None, done.request_id)
        asked, d = done
        if not isinstance(d, Decision):  # a route charges or reserves; it never settles
            msg = f"ext_authz made a {type(d).__name__}, not a decision"
            raise TypeError(msg)
        if d.allowed:
            return allowed(asked, d, d.request_id)
        return denied(d.reason.name, d.message, d.request_id, d.retry_at, figures(d))
