"""SetTerms and CreateAccount with terms through gRPC, behind real tokens (issue 20 §6).

Only admin and super_admin hold ``set_terms``: terms are the contract (seats, custom prices),
not something the customer's owner sets. Bad terms are INVALID_ARGUMENT naming the problem and
change nothing. The demo catalog: seed 004's per-seat premium credits, seed 001's flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from auth_kit import Secured

M = 1_000_000


def _premium(balance: quota_pb2.GetBalanceResponse) -> int:
    return next(p.balance for p in balance.pools if p.pool_id == "premium")


async def test_an_admin_sets_seats_and_the_account_shows_its_terms(secured: Secured) -> None:
    admin = secured.auth("admin")
    await secured.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(
            account_id="team", plan_id="agent_team", terms=admin_pb2.Terms(seats=3)
        ),
        metadata=admin,
    )
    balance = await secured.quota.GetBalance(
        quota_pb2.GetBalanceRequest(account_id="team"), metadata=admin
    )
    assert _premium(balance) == 6_000 * M
    account = await secured.admin.SetTerms(
        admin_pb2.SetTermsRequest(
            account_id="team",
            terms=admin_pb2.Terms(
                seats=4,
                caps=[admin_pb2.CapRange(pool_id="payg", cap_min=100 * M, cap_max=-1)],
                rates=[admin_pb2.RateOverride(pool_id="payg", meter="agent_credit", rate=80_000)],
            ),
        ),
        metadata=admin,
    )
    assert account.terms.seats == 4
    assert list(account.terms.caps) == [
        admin_pb2.CapRange(pool_id="payg", cap_min=100 * M, cap_max=-1)
    ]
    assert account.terms.rates[0].rate == 80_000
    balance = await secured.quota.GetBalance(
        quota_pb2.GetBalanceRequest(account_id="team"), metadata=admin
    )
    assert _premium(balance) == 8_000 * M  # this cycle: 2,000 more at once
    again = await secured.admin.GetAccount(
        admin_pb2.GetAccountRequest(account_id="team"), metadata=secured.auth("viewer")
    )
    assert again.terms == account.terms


async def test_existing_customers_flag_makes_slack_free(secured: Secured) -> None:
    admin = secured.auth("super_admin")
    await secured.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="z", plan_id="zite_pro"), metadata=admin
    )
    await secured.admin.SetTerms(
        admin_pb2.SetTermsRequest(
            account_id="z", terms=admin_pb2.Terms(flags=["existing_customer"])
        ),
        metadata=admin,
    )
    d = await secured.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(
            account_id="z", action="zite.slack", quantity=3, request_id="s1"
        ),
        metadata=admin,
    )
    assert d.allowed
    assert d.cost == 0


@pytest.mark.parametrize("role", ["owner", "billing", "viewer", "service"])
async def test_only_admins_set_terms(secured: Secured, role: str) -> None:
    admin = secured.auth("admin")
    await secured.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="team", plan_id="agent_team"), metadata=admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await secured.admin.SetTerms(
            admin_pb2.SetTermsRequest(account_id="team", terms=admin_pb2.Terms(seats=9)),
            metadata=secured.auth(role),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    account = await secured.admin.GetAccount(
        admin_pb2.GetAccountRequest(account_id="team"), metadata=admin
    )
    assert account.terms.seats == 1


async def test_an_owner_creates_accounts_but_not_with_terms(secured: Secured) -> None:
    owner = secured.auth("owner")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await secured.admin.CreateAccount(
            admin_pb2.CreateAccountRequest(
                account_id="t", plan_id="agent_team", terms=admin_pb2.Terms(seats=2)
            ),
            metadata=owner,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not create an account with terms" in (err.value.details() or "")
    account = await secured.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="t", plan_id="agent_team"), metadata=owner
    )
    assert account.terms.seats == 1


@pytest.mark.parametrize(
    ("terms", "names"),
    [
        (admin_pb2.Terms(seats=-2), "seats must be 1-"),
        (admin_pb2.Terms(allowances={"daily": -5}), "terms allowances daily"),
        (admin_pb2.Terms(prices={"agent.fly": 1}), "unknown action 'agent.fly'"),
        (admin_pb2.Terms(flags=["existing_customer", "existing_customer"]), "each flag once"),
        (admin_pb2.Terms(flags=["gold"]), "no plan's flag_prices names 'gold'"),
        (
            admin_pb2.Terms(
                caps=[
                    admin_pb2.CapRange(pool_id="payg", cap_min=1, cap_max=2),
                    admin_pb2.CapRange(pool_id="payg", cap_min=1, cap_max=3),
                ]
            ),
            "pool 'payg' is listed twice",
        ),
        (
            admin_pb2.Terms(caps=[admin_pb2.CapRange(pool_id="premium", cap_min=1, cap_max=2)]),
            "no overage or payg pool 'premium'",
        ),
    ],
)
async def test_bad_terms_are_invalid_argument_and_change_nothing(
    secured: Secured, terms: admin_pb2.Terms, names: str
) -> None:
    admin = secured.auth("admin")
    before = await secured.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="team", plan_id="agent_team"), metadata=admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await secured.admin.SetTerms(
            admin_pb2.SetTermsRequest(account_id="team", terms=terms), metadata=admin
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in (err.value.details() or "")
    after = await secured.admin.GetAccount(
        admin_pb2.GetAccountRequest(account_id="team"), metadata=admin
    )
    assert after == before


async def test_set_terms_on_a_missing_account_is_not_found(secured: Secured) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await secured.admin.SetTerms(
            admin_pb2.SetTermsRequest(account_id="ghost", terms=admin_pb2.Terms(seats=2)),
            metadata=secured.auth("admin"),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
