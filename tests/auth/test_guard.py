"""Tokens and roles through a real server: who may call what, and nothing changes otherwise."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from creditgate.auth.tokens import RELOAD_CHECK_S, revoke_token
from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from auth_kit import Secured

GRANT = admin_pb2.GrantRequest(account_id="a1", pool_id="bonus", amount=10**15, grant_id="g1")


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def _pools(s: Secured, account: str) -> dict[str, int]:
    return {p.pool_id: p.balance for p in (await s.engine.balance(account)).pools}


async def test_anonymous_grant_is_unauthenticated_and_changes_nothing(secured: Secured) -> None:
    """No token (the $10^9 grant of the issue): UNAUTHENTICATED, with how to send one."""
    await secured.engine.create_account("a1", "agent_team")
    before = await _pools(secured, "a1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await secured.admin.Grant(GRANT)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (info.value.details() or "")
    bad = (("authorization", "Bearer cg_not-a-token"),)
    assert await _code(secured.admin.Grant(GRANT, metadata=bad)) is grpc.StatusCode.UNAUTHENTICATED
    anonymous_read = secured.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="a1"))
    assert await _code(anonymous_read) is grpc.StatusCode.UNAUTHENTICATED
    assert await _pools(secured, "a1") == before


async def test_viewer_reads_but_cannot_grant(secured: Secured) -> None:
    """Viewer: reads answer; Grant is PERMISSION_DENIED, naming the roles that may."""
    await secured.engine.create_account("a1", "agent_team")
    before = await _pools(secured, "a1")
    md = secured.auth("viewer")
    await secured.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="a1"), metadata=md)
    await secured.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="a1"), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await secured.admin.Grant(GRANT, metadata=md)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "role viewer" in (info.value.details() or "")
    assert "owner" in (info.value.details() or "")
    charge = quota_pb2.CheckAndConsumeRequest(account_id="a1", action="agent.message", quantity=1)
    denied = await _code(secured.quota.CheckAndConsume(charge, metadata=md))
    assert denied is grpc.StatusCode.PERMISSION_DENIED
    assert await _pools(secured, "a1") == before


@pytest.mark.parametrize(
    ("role", "overage_ok", "payg_ok"),
    [
        ("billing", True, False),
        ("super_admin", True, True),
        ("admin", False, True),
        ("owner", False, True),
        ("viewer", False, False),
        ("service", False, False),
    ],
)
async def test_who_sets_max_spend_and_payg(
    secured: Secured,
    role: str,
    overage_ok: bool,  # noqa: FBT001 - a parameter of the case
    payg_ok: bool,  # noqa: FBT001
) -> None:
    """Seed 000: only Super Admin or Billing set the max auto top-up (overage cap).

    Seed 004: admins set the PAYG toggle and cap.
    """
    await secured.engine.create_account("glue", "glue_pro")
    await secured.engine.create_account("agent", "agent_team")
    md = secured.auth(role)
    for account, pool, cap, ok in (
        ("glue", "overage", 200_000_000, overage_ok),
        ("agent", "payg", 150_000_000, payg_ok),
    ):
        request = admin_pb2.SetPoolSettingsRequest(account_id=account, pool_id=pool, cap=cap)
        if ok:
            answer = await secured.admin.SetPoolSettings(request, metadata=md)
            assert {p.pool_id: p.cap for p in answer.pools}[pool] == cap
        else:
            code = await _code(secured.admin.SetPoolSettings(request, metadata=md))
            assert code is grpc.StatusCode.PERMISSION_DENIED
            state = await secured.engine.balance(account)
            assert {p.pool_id: p.cap for p in state.pools}[pool] != cap


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("owner", False),
        ("admin", True),
        ("super_admin", True),
        ("billing", False),
        ("viewer", False),
        ("service", False),
    ],
)
async def test_who_grants_money(
    secured: Secured,
    role: str,
    allowed: bool,  # noqa: FBT001 - a parameter of the case
) -> None:
    """Issue 20: a Grant of money into a balance pool is an admin's (and the super admin's).

    An owner buys credits through Purchase instead (tests/payments/test_purchases.py), which
    charges the payment method first. Owner and Admin alone see that balance in GetBalance.
    """
    await secured.engine.create_account("shingle", "shingle_pro")
    md = secured.auth(role)
    grant = admin_pb2.GrantRequest(
        account_id="shingle", pool_id="credits", amount=25_000_000, grant_id="buy-1"
    )
    if allowed:
        assert (await secured.admin.Grant(grant, metadata=md)).balance == 25_000_000
    else:
        denied = await _code(secured.admin.Grant(grant, metadata=md))
        assert denied is grpc.StatusCode.PERMISSION_DENIED
        assert (await _pools(secured, "shingle"))["credits"] == 0
    if role in ("billing", "viewer"):  # service may not read at all (test_service_role.py)
        shown = await secured.quota.GetBalance(
            quota_pb2.GetBalanceRequest(account_id="shingle"), metadata=md
        )
        assert "credits" not in {p.pool_id for p in shown.pools}
        assert "tokens" in {p.pool_id for p in shown.pools}


async def test_admin_grants_bonus_credits(secured: Secured) -> None:
    """A Grant into a grant pool (bonus) is an admin's, not billing's."""
    await secured.engine.create_account("a1", "agent_team")
    small = admin_pb2.GrantRequest(account_id="a1", pool_id="bonus", amount=5_000_000, grant_id="b")
    assert (await secured.admin.Grant(small, metadata=secured.auth("admin"))).balance == 5_000_000
    denied = await _code(secured.admin.Grant(small, metadata=secured.auth("billing")))
    assert denied is grpc.StatusCode.PERMISSION_DENIED


async def test_account_scoped_service_token(secured: Secured) -> None:
    """A service token for acct-x charges acct-x, never acct-y, not even as one batch item."""
    for account in ("acct-x", "acct-y"):
        await secured.engine.create_account(account, "agent_team")
    md = secured.auth("service-x")

    def charge(account: str, rid: str) -> quota_pb2.CheckAndConsumeRequest:
        return quota_pb2.CheckAndConsumeRequest(
            account_id=account, action="agent.message", quantity=1, request_id=rid
        )

    assert (await secured.quota.CheckAndConsume(charge("acct-x", "r1"), metadata=md)).allowed
    x_after_one = await _pools(secured, "acct-x")
    y_before = await _pools(secured, "acct-y")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await secured.quota.CheckAndConsume(charge("acct-y", "r2"), metadata=md)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "limited to accounts acct-x" in (info.value.details() or "")
    batch = quota_pb2.CheckAndConsumeBatchRequest(
        requests=[charge("acct-x", "r3"), charge("acct-y", "r4")]
    )
    code = await _code(secured.quota.CheckAndConsumeBatch(batch, metadata=md))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert await _pools(secured, "acct-x") == x_after_one  # not even the allowed item ran
    assert await _pools(secured, "acct-y") == y_before
    # The unscoped service token may charge both.
    both = await secured.quota.CheckAndConsumeBatch(batch, metadata=secured.auth("service"))
    assert [d.allowed for d in both.decisions] == [True, True]


async def test_revoked_token_is_rejected_after_reload(secured: Secured) -> None:
    """Revoking in the file takes effect at the next check (about a second), no restart."""
    await secured.engine.create_account("a1", "agent_team")
    request = quota_pb2.GetBalanceRequest(account_id="a1")
    md = secured.auth("viewer")
    await secured.quota.GetBalance(request, metadata=md)
    revoke_token(secured.tokens_file, "viewer")
    secured.clock.now += RELOAD_CHECK_S
    assert await _code(secured.quota.GetBalance(request, metadata=md)) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    await secured.quota.GetBalance(request, metadata=secured.auth("owner"))  # others still work


async def test_broken_tokens_file_keeps_the_loaded_tokens(secured: Secured) -> None:
    """A file that no longer parses is logged and ignored: the tokens loaded before stay."""
    await secured.engine.create_account("a1", "agent_team")
    secured.tokens_file.write_text("{not json: [")
    secured.clock.now += RELOAD_CHECK_S
    request = quota_pb2.GetBalanceRequest(account_id="a1")
    await secured.quota.GetBalance(request, metadata=secured.auth("viewer"))


async def test_health_and_reflection_need_no_token(secured: Secured) -> None:
    """Probes and grpcurl's listing work without a token."""
    health = health_pb2_grpc.HealthStub(secured.channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    stub = reflection_pb2_grpc.ServerReflectionStub(secured.channel)

    async def requests():  # type: ignore[no-untyped-def]  # noqa: ANN202
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in response.list_services_response.service}
    assert "creditgate.v1.AdminService" in names


async def _cli(s: Secured, *args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    if token is not None:
        env["CREDITGATE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "creditgate"),
        "--target",
        s.target,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_sends_its_token(secured: Secured) -> None:
    """Client commands send CREDITGATE_TOKEN (or --token); without one the status is shown."""
    await secured.engine.create_account("a1", "agent_team")
    code, out, _ = await _cli(secured, "balance", "a1", "--json", token=secured.tokens["viewer"])
    assert code == 0
    assert '"account_id": "a1"' in out
    code, _, err = await _cli(
        secured, "--token", secured.tokens["viewer"], "grant", "a1", "bonus", "5"
    )
    assert code == 1
    assert "PERMISSION_DENIED" in err
    code, _, err = await _cli(secured, "balance", "a1")
    assert code == 1
    assert err.startswith("creditgate: UNAUTHENTICATED: this call needs a bearer token")
