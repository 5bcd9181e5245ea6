"""The per-action failure policy: what a gateway or an SDK caller gets when Redis is down.

An action's ``on_unavailable`` in the plans file is ``deny`` (the default) or ``allow``. Where
creditgate answers for a gateway (Envoy's rate-limit and ext_authz services), ``allow`` lets
the request through unbilled; ``deny`` keeps the gRPC error, so that the filter's own failure
mode decides. The QuotaService's CheckAndConsume and Reserve keep their UNAVAILABLE, with the
policy in the trailing metadata ``x-creditgate-on-unavailable``, which the SDK
(``creditgate.client``) applies once its retries are spent.

Each such decision is counted (``creditgate_decisions_without_redis_total``) and logged, at
most one line per RPC and action every ``LOG_EVERY`` seconds, with the count since the last;
decisions held back by that are logged ``LOG_EVERY`` seconds after the line before them, even
if no other decision follows (an outage shorter than ``LOG_EVERY`` is logged whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.domain.errors import ON_UNAVAILABLE_KEY
from creditgate.transport import metrics

if TYPE_CHECKING:
    from creditgate.domain.catalog import Catalog

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger("creditgate.transport")

LOG_EVERY = 10.0
_last: dict[tuple[str, str], tuple[float, int]] = {}
_flushing: set[tuple[str, str]] = set()  # a line of the held-back count is scheduled


def policy(catalog: Catalog, action: str) -> str:
    """``allow`` or ``deny``: the action's ``on_unavailable`` (an unknown action: deny)."""
    return "allow" if action in catalog.fail_open else "deny"


def decided_without_redis(catalog: Catalog, rpc: str, action: str) -> bool:
    """Count and log one decision made without Redis; True when the action is let through."""
    known = action if action in catalog.actions else "(unknown)"
    chosen = policy(catalog, action)
    metrics.WITHOUT_REDIS.labels(rpc, known, chosen).inc()
    now = time.monotonic()
    since, count = _last.get((rpc, known), (0.0, 0))
    if now - since >= LOG_EVERY:
        _line(rpc, known, chosen, count + 1)
        _last[rpc, known] = (now, 0)
    else:
        _last[rpc, known] = (since, count + 1)
        if (rpc, known) not in _flushing:
            with contextlib.suppress(RuntimeError):  # no running loop: the next call logs it
                loop = asyncio.get_running_loop()
                loop.call_later(since + LOG_EVERY - now, _flush, rpc, known, chosen)
                _flushing.add((rpc, known))
    return chosen == "allow"


def _line(rpc: str, action: str, chosen: str, count: int) -> None:
    log.warning(
        "Redis unreachable: %s of action %s %s by its on_unavailable policy (%d since the "
        "last such line)",
        rpc,
        action,
        "let through unbilled" if chosen == "allow" else "refused",
        count,
    )


def _flush(rpc: str, action: str, chosen: str) -> None:
    """Log the decisions held back since the last line, if no later one has logged them."""
    _flushing.discard((rpc, action))
    _, count = _last.get((rpc, action), (0.0, 0))
    if count:
        _line(rpc, action, chosen, count)
        _last[rpc, action] = (time.monotonic(), 0)


def tell_policy(context: Ctx, catalog: Catalog, rpc: str, action: str) -> None:
    """A QuotaService call failed without Redis: count it, and say the action's policy.

    The policy goes into the trailing metadata (``x-creditgate-on-unavailable``), which the
    error carries to the caller; the SDK applies it.
    """
    chosen = "allow" if decided_without_redis(catalog, rpc, action) else "deny"
    trailing = tuple(context.trailing_metadata() or ())
    context.set_trailing_metadata((*trailing, (ON_UNAVAILABLE_KEY, chosen)))
