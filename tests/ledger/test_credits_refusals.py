"""CreditsService refuses with a clear status and reads nothing it should not (issue 20 §5, §7).

Roles: only owner, admin and super_admin hold ``view_credits``; a token limited to other
accounts is PERMISSION_DENIED. Bad input is INVALID_ARGUMENT naming the field, an unknown account
or pool NOT_FOUND, and a tampered cursor INVALID_ARGUMENT saying what to send instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.v1 import credits_pb2 as pb
from credits_kit import USD, Env, credits_sidecar

if TYPE_CHECKING:
    from pathlib import Path

    from google.protobuf.message import Message
    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger

CALLS: list[tuple[str, Message]] = [
    ("GetCredits", pb.GetCreditsRequest(account_id="a")),
    ("ListTransactions", pb.ListTransactionsRequest(account_id="a")),
    ("GetUsage", pb.GetUsageRequest(account_id="a")),
]


async def refused(
    env: Env, method: str, request: Message, who: str = "owner"
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.call(method, request, who)
    return info.value


async def funded(env: Env) -> None:
    await env.engine.create_account("a", "shop")
    for i in range(3):
        await env.engine.grant("a", "credits", USD, f"g{i}")
    await env.engine.create_account("m", "metered")
    await env.sync()


async def test_roles(ledger: Ledger, redis: AsyncRedis, tmp_path: Path) -> None:
    """Owner, admin, super_admin read; viewer, billing, service and other accounts' owners not."""
    if ledger.backend == "postgres":
        pytest.skip("the guard runs before the ledger: once is enough")
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await funded(env)
        for method, request in CALLS:
            for who in ("owner", "admin", "super_admin", "owner-a"):
                await env.call(method, request, who)
            for who in ("viewer", "billing", "service"):
                err = await refused(env, method, request, who)
                assert err.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "roles that may: admin, owner, super_admin" in (err.details() or "")
            err = await refused(env, method, request, "owner-other")
            assert err.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "account 'a' is not one of them" in (err.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await getattr(env.credits, method)(request)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CARD, LIST, USAGE = pb.GetCreditsRequest, pb.ListTransactionsRequest, pb.GetUsageRequest
BAD: list[tuple[Message, grpc.StatusCode, str]] = [
    (CARD(), IA, "account_id is required"),
    (CARD(account_id="nobody"), NF, "not in the ledger"),
    (CARD(account_id="a", pool_id="gold"), NF, "no pool 'gold'; its pools are: tokens, credits"),
    (CARD(account_id="m"), grpc.StatusCode.FAILED_PRECONDITION, "plan metered has no balance pool"),
    (CARD(account_id="m", pool_id="payg"), IA, "pay-as-you-go"),
    (LIST(account_id="a", limit=101), IA, "limit 101: give 1-100"),
    (LIST(account_id="a", limit=-1), IA, "limit -1: give 1-100"),
    (LIST(account_id="a", cursor="garbage!"), IA, "is not a next_cursor this listing gave"),
    (LIST(account_id="a", pool_id="gold"), NF, "has no pool 'gold'"),
    (USAGE(account_id="a", month="2026-13"), IA, "month '2026-13': give YYYY-MM"),
    (USAGE(account_id="a", month="9999-12"), IA, "month '9999-12': a period must end by"),
    (USAGE(account_id="a", from_day="9999-12-30", to_day="9999-12-31"), IA,
     "from_day '9999-12-30': a period must end by the end of year 9998"),
    (USAGE(account_id="a", from_day="2026-01-01"), IA, "needs both from_day and to_day"),
    (USAGE(account_id="a", from_day="2026-02-01", to_day="2026-01-01"), IA,
     "to_day 2026-01-01 is before from_day"),
    (USAGE(account_id="a", from_day="2024-01-01", to_day="2025-12-31"), IA,
     "731 days; at most 366"),
    (USAGE(account_id="a", month="2026-01", to_day="2026-01-02"), IA,
     "either month or from_day/to_day"),
    (USAGE(account_id="a", from_day="2026-02-30", to_day="2026-03-01"), IA,
     "from_day '2026-02-30'"),
]  # fmt: skip
METHOD = {CARD: "GetCredits", LIST: "ListTransactions", USAGE: "GetUsage"}


@pytest.mark.parametrize("case", BAD)
async def test_bad_input(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path, case: tuple[Message, grpc.StatusCode, str]
) -> None:
    """Each bad request: its status, and a message naming the field and what to send."""
    request, code, says = case
    method = METHOD[type(request)]
    if ledger.backend == "postgres" and method != "ListTransactions":
        pytest.skip("checked before the ledger is read, or the same SQL: once is enough")
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await funded(env)
        err = await refused(env, method, request)
        assert err.code() is code
        assert says in (err.details() or "")


async def test_tampered_or_foreign_cursors(
    ledger: Ledger, redis: AsyncRedis, tmp_path: Path
) -> None:
    """An edited cursor, or one given for another pool or account, is refused, never followed."""
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        await funded(env)
        await env.engine.create_account("b", "shop")
        await env.sync()
        page = await env.call(
            "ListTransactions",
            pb.ListTransactionsRequest(account_id="a", pool_id="credits", limit=1),
        )
        good = page.next_cursor
        assert good
        flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
        for account, pool, cursor in (
            ("a", "credits", flipped),
            ("a", "credits", good[:-4]),
            ("a", "", good),
            ("b", "credits", good),
            ("a", "credits", "x" * 300),
        ):
            err = await refused(
                env,
                "ListTransactions",
                pb.ListTransactionsRequest(
                    account_id=account, pool_id=pool, cursor=cursor, limit=1
                ),
            )
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "pass back next_cursor unchanged" in (err.details() or "")
        nxt = await env.call(
            "ListTransactions",
            pb.ListTransactionsRequest(account_id="a", pool_id="credits", limit=1, cursor=good),
        )
        assert nxt.transactions[0].request_id == "g1"


async def test_without_a_ledger(redis: AsyncRedis, tmp_path: Path) -> None:
    """A server without a ledger says how to give it one."""
    async with credits_sidecar(redis, None, tmp_path) as env:
        for method, request in CALLS:
            err = await refused(env, method, request)
            assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "CREDITGATE_LEDGER_URL" in (err.details() or "")


async def test_undecodable_request(ledger: Ledger, redis: AsyncRedis, tmp_path: Path) -> None:
    """Invalid UTF-8 in account_id: INVALID_ARGUMENT from the boundary, nothing read."""
    if ledger.backend == "postgres":
        pytest.skip("refused before the ledger")
    async with credits_sidecar(redis, ledger.store, tmp_path) as env:
        channel = grpc.aio.insecure_channel(env.target)
        call = channel.unary_unary(
            "/creditgate.v1.CreditsService/GetCredits",
            request_serializer=lambda b: b,
            response_deserializer=pb.GetCreditsResponse.FromString,
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"\x0a\x02\xff\xfe", metadata=env.auth())
        finally:
            await channel.close()
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid message" in (info.value.details() or "")
