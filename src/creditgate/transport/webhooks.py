"""The AdminService RPCs of webhook notifications: endpoints, secrets, what was sent.

They read and write the ledger database through ``creditgate.notify``; the role they need is
``manage_webhooks`` (admins, see auth/roles.py), which the guard checks before they run. A
server without a SQL ledger answers FAILED_PRECONDITION; a ledger outage UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.domain.errors import FailedPreconditionError, UnavailableError
from creditgate.ledger.store import LedgerError
from creditgate.notify import message
from creditgate.transport.errors import boundary
from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator

    from creditgate.notify import Endpoint, Notifications

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
_DEFAULT_LIMIT = 50


def endpoint_pb(ep: Endpoint, *, with_secrets: bool = False) -> admin_pb2.WebhookEndpoint:
    return admin_pb2.WebhookEndpoint(
        endpoint_id=ep.endpoint_id,
        account_id=ep.account,
        url=ep.url,
        kinds=list(ep.kinds),
        enabled=ep.enabled,
        disabled_reason=ep.disabled_reason,
        created_at_unix_ms=ep.created_ms,
        secrets=list(ep.secrets) if with_secrets else [],
        secret_count=len(ep.secrets),
    )


@contextlib.contextmanager
def _ledger() -> Iterator[None]:
    try:
        yield
    except LedgerError as exc:
        msg = f"the ledger database is unavailable ({exc}); retry"
        raise UnavailableError(msg) from exc


class WebhookAdmin:
    """Mixed into ``AdminService``; ``notifications`` None: the server has no SQL ledger."""

    notifications: Notifications | None

    def _api(self) -> Notifications:
        if self.notifications is None:
            msg = (
                "webhook notifications need a SQL ledger: set CREDITGATE_LEDGER_URL "
                "(sqlite:///path or postgresql://...)"
            )
            raise FailedPreconditionError(msg)
        return self.notifications

    @boundary
    async def CreateWebhookEndpoint(
        self, request: admin_pb2.CreateWebhookEndpointRequest, context: Ctx
    ) -> admin_pb2.WebhookEndpoint:
        with _ledger():
            ep = await self._api().create_endpoint(
                request.account_id, request.url, list(request.kinds), request.secret
            )
        return endpoint_pb(ep, with_secrets=True)

    @boundary
    async def ListWebhookEndpoints(
        self, request: admin_pb2.ListWebhookEndpointsRequest, context: Ctx
    ) -> admin_pb2.ListWebhookEndpointsResponse:
        with _ledger():
            eps = await self._api().endpoints(request.account_id or None)
        return admin_pb2.ListWebhookEndpointsResponse(endpoints=[endpoint_pb(e) for e in eps])

    @boundary
    async def SetWebhookEndpointEnabled(
        self, request: admin_pb2.SetWebhookEndpointEnabledRequest, context: Ctx
    ) -> admin_pb2.WebhookEndpoint:
        with _ledger():
            ep = await self._api().set_enabled(request.endpoint_id, enabled=request.enabled)
        return endpoint_pb(ep)

    @boundary
    async def DeleteWebhookEndpoint(
        self, request: admin_pb2.DeleteWebhookEndpointRequest, context: Ctx
    ) -> admin_pb2.DeleteWebhookEndpointResponse:
        with _ledger():
            await self._api().delete_endpoint(request.endpoint_id)
        return admin_pb2.DeleteWebhookEndpointResponse()

    @boundary
    async def RotateWebhookSecret(
        self, request: admin_pb2.RotateWebhookSecretRequest, context: Ctx
    ) -> admin_pb2.WebhookEndpoint:
        with _ledger():
            ep = await self._api().rotate_secret(
                request.endpoint_id, request.secret, drop_previous=request.drop_previous
            )
        return endpoint_pb(ep, with_secrets=True)

    @boundary
    async def ListNotifications(
        self, request: admin_pb2.ListNotificationsRequest, context: Ctx
    ) -> admin_pb2.ListNotificationsResponse:
        with _ledger():
            page, cursor = await self._api().sent(
                request.account_id, request.limit or _DEFAULT_LIMIT, request.cursor
            )
        return admin_pb2.ListNotificationsResponse(
            notifications=[
                admin_pb2.Notification(
                    notification_id=n.notification_id,
                    account_id=n.account,
                    kind=n.kind,
                    created_at_unix_ms=n.created_ms,
                    payload=n.payload,
                    source=n.source,
                    summary=message.summary(n.payload),
                    deliveries=[
                        admin_pb2.NotificationDelivery(
                            endpoint_id=d.endpoint_id,
                            state=d.state,
                            attempts=d.attempts,
                            last_status=d.last_status,
                        )
                        for d in n.deliveries
                    ],
                )
                for n in page
            ],
            next_cursor=cursor or "",
            has_more=cursor is not None,
        )
