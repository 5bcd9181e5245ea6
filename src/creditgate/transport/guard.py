"""The gate in front of every servicer method: who is calling, and may they do this?

``Guard.wrap`` runs before the servicer's own error boundary. A missing, unknown or revoked token
is UNAUTHENTICATED; a role without the operation, or an account outside the token's accounts
(for a batch: any of its items), is PERMISSION_DENIED. Either way the servicer never runs, so
nothing changes. The caller is then in ``current()`` for the servicer (audit, pool-kind checks).
Health and reflection are registered without the guard: probes need no token.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from creditgate.auth import roles
from creditgate.domain.errors import PermissionDeniedError, UnauthenticatedError
from creditgate.transport.errors import Malformed, status_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import grpc

    from creditgate.auth.tokens import TokenEntry, TokenStore
    from creditgate.v1 import quota_pb2

    Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: roles.Role
    accounts: tuple[str, ...] = ()


_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "creditgate_caller", default=None
)
HOW_TO = (
    "send metadata 'authorization: Bearer <token>' (creditgate --token or CREDITGATE_TOKEN); "
    "an operator creates tokens with `creditgate token create`"
)


def current() -> Principal | None:
    """The caller of the RPC being served; None when the server runs without auth."""
    return _CALLER.get()


def _bearer(metadata: Any) -> str | None:  # noqa: ANN401 - grpc's metadata type
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _accounts(request: Any) -> list[str]:  # noqa: ANN401 - any request message
    items = getattr(request, "requests", None)
    if items is not None:  # CheckAndConsumeBatch: every item
        return [item.account_id for item in items]
    account = getattr(request, "account_id", None)
    return [account] if account is not None else []


def require(principal: Principal | None, ops: tuple[roles.Op, ...], what: str) -> None:
    """PERMISSION_DENIED unless the caller (if auth is on) holds one of ``ops``."""
    if principal is None or roles.may(principal.role, ops):
        return
    allowed = ", ".join(roles.roles_for(ops))
    msg = (
        f"token {principal.name!r} has role {principal.role}, which may not {what}; "
        f"roles that may: {allowed}"
    )
    raise PermissionDeniedError(msg)


def require_account(principal: Principal | None, account: str) -> None:
    """PERMISSION_DENIED when the caller's token is limited to accounts other than ``account``.

    The guard checks the ``account_id`` fields itself; a servicer whose account is inside the
    request (Envoy's descriptors) checks it here once it has read it.
    """
    if principal is None or not principal.accounts or account in principal.accounts:
        return
    msg = (
        f"token {principal.name!r} is limited to accounts "
        f"{', '.join(principal.accounts)}; account {account!r} is not one of them"
    )
    raise PermissionDeniedError(msg)


def sees_all_balances() -> bool:
    """Whether the caller may see balances its call did not move (``read_money``, or no auth)."""
    principal = current()
    return principal is None or roles.may(principal.role, ("read_money",))


class Guard:
    """Authenticates and authorizes each call against a ``TokenStore``."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def authenticate(self, metadata: Any) -> Principal:  # noqa: ANN401 - grpc's metadata type
        token = _bearer(metadata)
        if token is None:
            msg = f"this call needs a bearer token: {HOW_TO}"
            raise UnauthenticatedError(msg)
        entry: TokenEntry | None = self.store.lookup(token)
        if entry is None:
            msg = "the bearer token is unknown or revoked; ask an operator for a valid one"
            raise UnauthenticatedError(msg)
        return Principal(entry.name, entry.role, entry.accounts)

    def authorize(self, principal: Principal, method: str, request: Any) -> None:  # noqa: ANN401
        require(principal, roles.RPC_OPS[method], f"call {method}")
        if not principal.accounts or isinstance(request, Malformed):
            return
        for account in _accounts(request):
            require_account(principal, account)

    def wrap(self, method: str, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: ANN401
            try:
                principal = self.authenticate(context.invocation_metadata())
                self.authorize(principal, method, request)
            except (UnauthenticatedError, PermissionDeniedError) as exc:
                code, message = status_of(exc)
                await context.abort(code, message)
            token = _CALLER.set(principal)
            try:
                return await handler(request, context)
            finally:
                _CALLER.reset(token)

        return guarded


Moved = TypeVar(
    "Moved",
    "quota_pb2.Decision",
    "quota_pb2.SettleResponse",
    "quota_pb2.ReleaseResponse",
    "quota_pb2.RefundResponse",
)


def redact_unmoved(response: Moved) -> Moved:
    """Keep only the balances of pools the call moved, for callers without read_money.

    A service charges an account without being allowed to read it: its answer shows what is
    left in the pools it charged (or was given back), not the account's other balances.
    """
    if sees_all_balances():
        return response
    field = "returns" if "returns" in response.DESCRIPTOR.fields_by_name else "debits"
    moved = {row.pool_id for row in getattr(response, field)}
    kept = [b for b in response.balances if b.pool_id in moved]
    del response.balances[:]
    response.balances.extend(kept)
    return response


def redact_balance(response: quota_pb2.GetBalanceResponse) -> quota_pb2.GetBalanceResponse:
    """Drop money balance pools for callers without read_money (seeds 002/003)."""
    if sees_all_balances():
        return response
    kept = [p for p in response.pools if p.kind != "balance"]
    del response.pools[:]
    response.pools.extend(kept)
    return response
