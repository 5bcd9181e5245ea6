"""creditgate.v1.AdminService: provisioning, grants, caps and the test clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.domain.errors import InvalidArgumentError
from creditgate.transport import convert
from creditgate.transport.errors import boundary
from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from creditgate.engine import Engine

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _status(value: int, *, default: str) -> str:
    if value == admin_pb2.ACCOUNT_STATUS_UNSPECIFIED:
        return default
    name = convert.STATUS_NAMES.get(value)
    if name is None:
        msg = f"status {value} is not an AccountStatus (use ACTIVE, TRIAL or SUSPENDED)"
        raise InvalidArgumentError(msg)
    return name


class AdminService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @boundary
    async def CreateAccount(
        self,
        request: admin_pb2.CreateAccountRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        return convert.account(
            await self.engine.create_account(
                request.account_id,
                request.plan_id,
                anchor_day=request.anchor_day,
                status=_status(request.status, default="active"),
            )
        )

    @boundary
    async def UpdateAccount(
        self,
        request: admin_pb2.UpdateAccountRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        return convert.account(
            await self.engine.update_account(
                request.account_id,
                request.plan_id,
                anchor_day=request.anchor_day,
                status=_status(request.status, default=""),
            )
        )

    @boundary
    async def GetAccount(
        self,
        request: admin_pb2.GetAccountRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        return convert.account(await self.engine.balance(request.account_id))

    @boundary
    async def Grant(
        self,
        request: admin_pb2.GrantRequest,
        context: Ctx,
    ) -> admin_pb2.GrantResponse:
        g = await self.engine.grant(
            request.account_id,
            request.pool_id,
            request.amount,
            request.grant_id,
            expires_at=request.expires_at_unix_ms,
            note=request.note,
        )
        return admin_pb2.GrantResponse(
            grant_id=g.grant_id, balance=g.balance, unit=g.unit, replayed=g.replayed
        )

    @boundary
    async def SetPoolSettings(
        self,
        request: admin_pb2.SetPoolSettingsRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        cap = request.cap if request.HasField("cap") else None
        enabled = request.enabled if request.HasField("enabled") else None
        if cap is None and enabled is None:
            msg = "give cap or enabled (or both); nothing to change"
            raise InvalidArgumentError(msg)
        return convert.account(
            await self.engine.set_pool_settings(
                request.account_id, request.pool_id, cap=cap, enabled=enabled
            )
        )

    @boundary
    async def AdvanceTestClock(
        self,
        request: admin_pb2.AdvanceTestClockRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        return convert.account(
            await self.engine.advance_clock(
                request.account_id, seconds=request.seconds, to_ms=request.to_unix_ms
            )
        )
