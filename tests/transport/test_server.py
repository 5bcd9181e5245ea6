"""The served surface: health, reflection, one charge through a real channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar


async def test_reflection_lists_the_services(sidecar: Sidecar) -> None:
    """Reflection names QuotaService, AdminService, both Envoy services and health."""
    stub = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)

    async def requests():  # type: ignore[no-untyped-def]  # noqa: ANN202
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in response.list_services_response.service}
    assert {
        "creditgate.v1.QuotaService",
        "creditgate.v1.AdminService",
        "envoy.service.ratelimit.v3.RateLimitService",
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    } <= names


async def test_health_check_answers(sidecar: Sidecar) -> None:
    """The standard health service answers SERVING for the server as a whole."""
    stub = health_pb2_grpc.HealthStub(sidecar.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_charge_through_grpc(sidecar: Sidecar) -> None:
    """An email on Zite's free plan costs 5 integration credits from the monthly allowance."""
    await sidecar.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="acme", plan_id="zite_free")
    )
    d = await sidecar.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(
            account_id="acme", action="zite.email.send", quantity=1, request_id="r1"
        )
    )
    assert d.allowed
    assert d.cost == 5_000_000
    assert [(x.pool_id, x.amount) for x in d.debits] == [("integration", 5_000_000)]
