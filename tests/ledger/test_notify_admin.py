"""The webhook admin RPCs through gRPC, behind tokens: roles, bad input, ListNotifications."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from auth_kit import secured_sidecar
from creditgate.notify import Dispatcher, DispatchSettings, Notifications, NotifyStore
from creditgate.v1 import admin_pb2
from webhook_kit import SECRET, Receiver, serve

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger
    from creditgate.domain.catalog import Catalog


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver(secrets=[SECRET]))


async def test_only_admins_manage_endpoints(
    ledger: Ledger, redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path
) -> None:
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, ledger.store):
        create = admin_pb2.CreateWebhookEndpointRequest(account_id="acme", url="https://h.test/x")
        for role in ("service", "viewer", "billing"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.admin.CreateWebhookEndpoint(create, metadata=s.auth(role))
            assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.admin.ListNotifications(
                    admin_pb2.ListNotificationsRequest(account_id="acme"), metadata=s.auth(role)
                )
            assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        listed = await s.admin.ListWebhookEndpoints(
            admin_pb2.ListWebhookEndpointsRequest(), metadata=s.auth("admin")
        )
        assert list(listed.endpoints) == []
        for role in ("admin", "owner", "super_admin"):
            ep = await s.admin.CreateWebhookEndpoint(create, metadata=s.auth(role))
            assert ep.enabled
            assert ep.secret_count == 1
            assert ep.secrets[0].startswith("whsec_")


async def test_endpoint_lifecycle_and_bad_input(
    ledger: Ledger, redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path
) -> None:
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, ledger.store):
        admin = s.auth("admin")
        bad = [
            (admin_pb2.CreateWebhookEndpointRequest(url="ftp://h.test"), "http:// or https://"),
            (admin_pb2.CreateWebhookEndpointRequest(url=""), "http:// or https://"),
            (
                admin_pb2.CreateWebhookEndpointRequest(url="https://h.test", secret="s3cret"),  # noqa: S106
                "must start with 'whsec_'",
            ),
            (
                admin_pb2.CreateWebhookEndpointRequest(url="https://h.test", kinds=["low"]),
                "unknown notification kind",
            ),
        ]
        for request, words in bad:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.admin.CreateWebhookEndpoint(request, metadata=admin)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert words in (err.value.details() or "")
        none = await s.admin.ListWebhookEndpoints(
            admin_pb2.ListWebhookEndpointsRequest(), metadata=admin
        )
        assert list(none.endpoints) == []  # bad input changed nothing

        ep = await s.admin.CreateWebhookEndpoint(
            admin_pb2.CreateWebhookEndpointRequest(
                url="https://h.test/hook", kinds=["credit_balance_low"], secret=SECRET
            ),
            metadata=admin,
        )
        assert (ep.account_id, list(ep.kinds), list(ep.secrets)) == (
            "", ["credit_balance_low"], [SECRET]
        )  # fmt: skip
        rotated = await s.admin.RotateWebhookSecret(
            admin_pb2.RotateWebhookSecretRequest(endpoint_id=ep.endpoint_id), metadata=admin
        )
        assert rotated.secret_count == 2
        assert list(rotated.secrets)[1] == SECRET
        listed = await s.admin.ListWebhookEndpoints(
            admin_pb2.ListWebhookEndpointsRequest(), metadata=admin
        )
        [shown] = listed.endpoints
        assert (shown.secret_count, list(shown.secrets)) == (2, [])  # secrets never listed
        off = await s.admin.SetWebhookEndpointEnabled(
            admin_pb2.SetWebhookEndpointEnabledRequest(endpoint_id=ep.endpoint_id, enabled=False),
            metadata=admin,
        )
        assert (off.enabled, off.disabled_reason) == (False, "disabled by an admin")
        await s.admin.DeleteWebhookEndpoint(
            admin_pb2.DeleteWebhookEndpointRequest(endpoint_id=ep.endpoint_id), metadata=admin
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.admin.DeleteWebhookEndpoint(
                admin_pb2.DeleteWebhookEndpointRequest(endpoint_id=ep.endpoint_id), metadata=admin
            )
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.admin.ListNotifications(
                admin_pb2.ListNotificationsRequest(account_id="acme", limit=101), metadata=admin
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "limit 101" in (err.value.details() or "")


async def test_list_notifications_pages_newest_first(
    ledger: Ledger, redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path, receiver: Receiver
) -> None:
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, ledger.store):
        admin = s.auth("admin")
        ep = await s.admin.CreateWebhookEndpoint(
            admin_pb2.CreateWebhookEndpointRequest(
                account_id="acme", url=receiver.url, secret=SECRET
            ),
            metadata=admin,
        )
        api = Notifications.of(ledger.store)
        assert api is not None
        for i in range(5):
            await api.notify("acme", "credit_auto_recharge_triggered", {"amount": i}, f"t-{i}")
        store = api.store
        assert isinstance(store, NotifyStore)
        async with httpx.AsyncClient() as http:
            await Dispatcher(store, DispatchSettings(schedule=(0.05,))).run_once(http)
        seen: list[str] = []
        cursor = ""
        while True:
            page = await s.admin.ListNotifications(
                admin_pb2.ListNotificationsRequest(account_id="acme", limit=2, cursor=cursor),
                metadata=admin,
            )
            seen += [n.notification_id for n in page.notifications]
            if not page.has_more:
                assert page.next_cursor == ""
                break
            cursor = page.next_cursor
        assert seen == ["t-4", "t-3", "t-2", "t-1", "t-0"]
        last = await s.admin.ListNotifications(
            admin_pb2.ListNotificationsRequest(account_id="acme", limit=1), metadata=admin
        )
        [n] = last.notifications
        assert json.loads(n.payload)["data"] == {
            "account": "acme", "amount": "4", "amount_units": "0.000004"
        }  # fmt: skip
        assert [(d.endpoint_id, d.state, d.attempts, d.last_status) for d in n.deliveries] == [
            (ep.endpoint_id, "delivered", 1, 200)
        ]
        assert sorted(receiver.ids()) == [f"t-{i}" for i in range(5)]


async def test_without_a_ledger_the_rpcs_say_what_is_missing(
    redis: AsyncRedis, demo_catalog: Catalog, tmp_path: Path
) -> None:
    async for s in secured_sidecar(redis, demo_catalog, tmp_path, None):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.admin.ListWebhookEndpoints(
                admin_pb2.ListWebhookEndpointsRequest(), metadata=s.auth("admin")
            )
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "CREDITGATE_LEDGER_URL" in (err.value.details() or "")
