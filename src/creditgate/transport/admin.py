"""creditgate.v1.AdminService: provisioning, grants, caps and the test clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from creditgate.auth import roles
from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.purchase import grant_id as purchase_grant_id
from creditgate.domain.recurring import REQUEST_PREFIX as RECURRING
from creditgate.domain.topup import grant_id as topup_grant_id
from creditgate.domain.topup import merge_settings
from creditgate.payments.provider import TestProvider
from creditgate.payments.purchases import Purchases
from creditgate.transport import convert
from creditgate.transport.audit import Auditor
from creditgate.transport.errors import boundary
from creditgate.transport.guard import current, require
from creditgate.transport.webhooks import WebhookAdmin
from creditgate.v1 import admin_pb2

if TYPE_CHECKING:
    from creditgate.domain.results import AccountState
    from creditgate.engine import Engine
    from creditgate.notify import Notifications

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# Grant ids that name other movements: the credits of purchases and auto top-ups, and the
# request ids of recurring charges (which share the ledger's id space with grants).
_PAID_GRANTS = (purchase_grant_id(""), topup_grant_id(""), RECURRING)


def _status(value: int, *, default: str) -> str:
    if value == admin_pb2.ACCOUNT_STATUS_UNSPECIFIED:
        return default
    name = convert.STATUS_NAMES.get(value)
    if name is None:
        msg = f"status {value} is not an AccountStatus (use ACTIVE, TRIAL or SUSPENDED)"
        raise InvalidArgumentError(msg)
    return name


def _require_pool(state: AccountState, pool_id: str, ops: dict[str, roles.Op], verb: str) -> None:
    """Narrow Grant/SetPoolSettings to the operation the pool's kind makes it (seeds 000-004)."""
    kind = next((p.kind for p in state.pools if p.pool_id == pool_id), None)
    op = ops.get(kind or "")
    if op is not None:  # another pool or kind: the engine refuses it with its own message
        require(current(), (op,), f"{verb} the {kind} pool {pool_id!r}")


class AdminService(WebhookAdmin):
    """Each change reads the account before it and writes an audit row after it."""

    def __init__(
        self,
        engine: Engine,
        auditor: Auditor | None = None,
        purchases: Purchases | None = None,
        notifications: Notifications | None = None,
    ) -> None:
        self.engine = engine
        self.audit = auditor or Auditor()
        # The embedded default charges nothing: the approving test provider says so.
        self.purchases = purchases or Purchases(engine, TestProvider(), self.audit.store)
        self.notifications = notifications

    @boundary
    async def CreateAccount(
        self,
        request: admin_pb2.CreateAccountRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        terms = convert.terms_of(request.terms)
        if request.HasField("terms"):
            require(current(), ("set_terms",), "create an account with terms")
        after = await self.engine.create_account(
            request.account_id,
            request.plan_id,
            anchor_day=request.anchor_day,
            status=_status(request.status, default="active"),
            terms=terms,
        )
        await self.audit.record("AdminService/CreateAccount", request, None, after)
        return convert.account(after)

    @boundary
    async def UpdateAccount(
        self,
        request: admin_pb2.UpdateAccountRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        before = await self.engine.balance(request.account_id)
        after = await self.engine.update_account(
            request.account_id,
            request.plan_id,
            anchor_day=request.anchor_day,
            status=_status(request.status, default=""),
        )
        await self.audit.record("AdminService/UpdateAccount", request, before, after)
        return convert.account(after)

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
        if request.grant_id.startswith(_PAID_GRANTS):
            msg = (
                f"grant ids starting with {' or '.join(_PAID_GRANTS)} are the credits of "
                "purchases and auto top-ups and the ids of recurring charges; choose another "
                "grant_id"
            )
            raise InvalidArgumentError(msg)
        before = await self.engine.balance(request.account_id)
        _require_pool(before, request.pool_id, roles.GRANT_OPS, "grant into")
        g = await self.engine.grant(
            request.account_id,
            request.pool_id,
            request.amount,
            request.grant_id,
            expires_at=request.expires_at_unix_ms,
            note=request.note,
        )
        after = await self.engine.balance(request.account_id)
        await self.audit.record("AdminService/Grant", request, before, after)
        return admin_pb2.GrantResponse(
            grant_id=g.grant_id, balance=g.balance, unit=g.unit, replayed=g.replayed
        )

    @boundary
    async def Purchase(
        self,
        request: admin_pb2.PurchaseRequest,
        context: Ctx,
    ) -> admin_pb2.PurchaseResponse:
        before = await self.engine.balance(request.account_id)
        done = await self.purchases.purchase(
            request.account_id, request.purchase_id, request.amount
        )
        if not done.replayed:
            after = await self.engine.balance(request.account_id)
            await self.audit.record("AdminService/Purchase", request, before, after)
        r = done.record
        return admin_pb2.PurchaseResponse(
            purchase_id=r.purchase_id,
            account_id=r.account,
            amount=r.amount,
            unit=r.unit,
            status=r.status,
            provider=r.provider,
            provider_ref=r.provider_ref,
            pool_id=done.pool,
            balance=done.balance,
            replayed=done.replayed,
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
        before = await self.engine.balance(request.account_id)
        _require_pool(before, request.pool_id, roles.SETTINGS_OPS, "change the settings of")
        after = await self.engine.set_pool_settings(
            request.account_id, request.pool_id, cap=cap, enabled=enabled
        )
        await self.audit.record("AdminService/SetPoolSettings", request, before, after)
        return convert.account(after)

    @boundary
    async def SetAutoTopUp(
        self,
        request: admin_pb2.SetAutoTopUpRequest,
        context: Ctx,
    ) -> admin_pb2.AutoTopUp:
        def given(name: str) -> int | None:
            return getattr(request, name) if request.HasField(name) else None

        enabled = request.enabled if request.HasField("enabled") else None
        threshold, amount, cap = given("threshold"), given("amount"), given("monthly_max")
        if (enabled, threshold, amount, cap) == (None, None, None, None):
            msg = "give enabled, threshold, amount or monthly_max; nothing to change"
            raise InvalidArgumentError(msg)
        view = await self.engine.auto_topup(request.account_id, request.pool_id)
        if (enabled, threshold, amount) != (None, None, None):
            require(current(), ("auto_topup",), f"change the auto top-up of {view.pool!r}")
        if cap is not None:
            require(current(), ("set_max_spend",), "set the maximum auto top-up spend")
        before = await self.engine.balance(request.account_id)
        new = merge_settings(view.settings, enabled, threshold, amount, cap)
        after = await self.engine.set_auto_topup(request.account_id, view.pool, new)
        await self.audit.record("AdminService/SetAutoTopUp", request, before, after)
        return convert.auto_topup(await self.engine.auto_topup(request.account_id, view.pool))

    @boundary
    async def GetAutoTopUp(
        self,
        request: admin_pb2.GetAutoTopUpRequest,
        context: Ctx,
    ) -> admin_pb2.AutoTopUp:
        return convert.auto_topup(await self.engine.auto_topup(request.account_id, request.pool_id))

    @boundary
    async def SetTerms(
        self,
        request: admin_pb2.SetTermsRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        terms = convert.terms_of(request.terms)
        before = await self.engine.balance(request.account_id)
        after = await self.engine.set_terms(request.account_id, terms)
        await self.audit.record("AdminService/SetTerms", request, before, after)
        return convert.account(after)

    @boundary
    async def AdvanceTestClock(
        self,
        request: admin_pb2.AdvanceTestClockRequest,
        context: Ctx,
    ) -> admin_pb2.Account:
        before = await self.engine.balance(request.account_id)
        after = await self.engine.advance_clock(
            request.account_id, seconds=request.seconds, to_ms=request.to_unix_ms
        )
        await self.audit.record("AdminService/AdvanceTestClock", request, before, after)
        return convert.account(after)
