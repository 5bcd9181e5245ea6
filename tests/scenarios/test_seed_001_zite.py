"""Seed 001, Zite integration credits (../shared/seeds/001_563b35168a33c227.txt), over gRPC.

Plans ``zite_free``, ``zite_pro``, ``zite_pro_legacy``, ``zite_business`` and ``zite_team`` of
examples/demo.yaml. Rules exercised:

- what an action costs: a standard integration 1 credit, an email 5, a document 10, a Zite
  Database operation nothing (allowed, cost 0, no debit), on every plan;
- the monthly allowance per plan (Free 1,000, Pro 50,000, Business 250,000, Team 1,000,000);
- the allowance resets on the 1st of each month (UTC), whatever day the account signed up on,
  and unused credits do not roll over;
- AI credits are separate from integration credits: exhausting one leaves the other whole, and
  an AI action cannot be paid with integration credits;
- Airtable, Google Sheets and Slack are free for existing customers (the account flag
  ``existing_customer``, or ``zite_pro_legacy``) but cost 1 credit on today's Pro;
- Enterprise "Custom": per-account overrides of the allowances on a listed plan;
- a mid-month plan upgrade keeps this month's usage.

Every account's test clock is first moved to 2027-01-15T12:00Z.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from scenario_kit import clock_to, debits, ms

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar

M = 1_000_000  # micro-units per credit
ALLOWED = quota_pb2.REASON_ALLOWED
INSUFFICIENT = quota_pb2.REASON_INSUFFICIENT_CREDITS


T0 = ms(2027, 1, 15, 12)
FEB_1 = ms(2027, 2, 1)


async def open_account(sc: Sidecar, account_id: str, plan: str, anchor_day: int = 15) -> None:
    await sc.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=account_id, plan_id=plan, anchor_day=anchor_day)
    )
    await clock_to(sc, account_id, T0)


async def use(
    sc: Sidecar,
    account_id: str,
    action: str,
    quantity: int = 1,
) -> quota_pb2.Decision:
    return await sc.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(account_id=account_id, action=action, quantity=quantity)
    )


async def left(sc: Sidecar, account_id: str) -> dict[str, int]:
    """Each pool's balance, in micro-credits."""
    bal = await sc.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=account_id))
    return {p.pool_id: p.balance for p in bal.pools}


@pytest.mark.parametrize(
    ("action", "cost"),
    [
        ("zite.integration", 1),
        ("zite.email.send", 5),
        ("zite.document.generate", 10),
    ],
)
async def test_integration_actions_cost_their_listed_credits(
    sidecar: Sidecar, action: str, cost: int
) -> None:
    """Each action costs what the seed's table lists.

    "Standard integration (e.g. Twilio, HubSpot, OpenAI, Google Drive) 1 | Email send 5 |
    Document generation (coming soon) 10", taken from the monthly integration allowance.
    """
    await open_account(sidecar, "zite-acme", "zite_free")
    d = await use(sidecar, "zite-acme", action, 3)
    assert (d.allowed, d.reason, d.cost, d.meter) == (
        True,
        ALLOWED,
        3 * cost * M,
        "integration_credit",
    )
    assert debits(d.debits) == [("integration", 3 * cost * M)]
    assert (await left(sidecar, "zite-acme"))["integration"] == (1000 - 3 * cost) * M


@pytest.mark.parametrize("plan", ["zite_free", "zite_team"])
async def test_database_operations_are_always_free(sidecar: Sidecar, plan: str) -> None:
    """Zite Database operations are allowed with cost 0, even with no credits left.

    "Zite Database operations are always free and do not use any integration credits,
    regardless of your plan."
    """
    await open_account(sidecar, "zite-db", plan)
    allowance = (await left(sidecar, "zite-db"))["integration"]
    assert (await use(sidecar, "zite-db", "zite.integration", allowance // M)).allowed
    d = await use(sidecar, "zite-db", "zite.db", 10_000)
    assert (d.allowed, d.reason, d.cost, list(d.debits)) == (True, ALLOWED, 0, [])
    assert (await left(sidecar, "zite-db"))["integration"] == 0


@pytest.mark.parametrize(
    ("plan", "monthly"),
    [
        ("zite_free", 1_000),
        ("zite_pro", 50_000),
        ("zite_business", 250_000),
        ("zite_team", 1_000_000),
    ],
)
async def test_monthly_allowance_per_plan(sidecar: Sidecar, plan: str, monthly: int) -> None:
    """Each plan's monthly allowance is usable to the last credit and not one more.

    "Free 1,000 | Pro 50,000 | Business 250,000 | Team 1,000,000" credits / month.
    """
    await open_account(sidecar, "zite-plan", plan)
    assert (await left(sidecar, "zite-plan"))["integration"] == monthly * M
    assert (await use(sidecar, "zite-plan", "zite.integration", monthly)).allowed
    d = await use(sidecar, "zite-plan", "zite.integration")
    assert (d.allowed, d.reason, d.shortfall) == (False, INSUFFICIENT, 1 * M)
    assert d.retry_at_unix_ms == FEB_1


async def test_credits_reset_on_the_first_utc_not_the_signup_day(sidecar: Sidecar) -> None:
    """The allowance resets on the 1st of the month (UTC) and unused credits do not roll over.

    "Integration credits reset on the 1st of each month (UTC). Unused credits do not roll over
    — each month starts fresh based on your plan." An account whose billing anchor is the 15th
    still renews on Feb 1 00:00 UTC; 23:59:59 on Jan 31 is still January.
    """
    await open_account(sidecar, "zite-reset", "zite_pro", anchor_day=15)
    bal = await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="zite-reset"))
    assert {p.pool_id: p.next_reset_unix_ms for p in bal.pools} == {
        "integration": FEB_1,
        "ai": FEB_1,
    }
    assert (await use(sidecar, "zite-reset", "zite.email.send", 9_000)).allowed  # 45,000
    assert (await use(sidecar, "zite-reset", "zite.email.send", 1_001)).retry_at_unix_ms == FEB_1

    await clock_to(sidecar, "zite-reset", ms(2027, 1, 31, 23, 59) + 59_000)
    assert (await left(sidecar, "zite-reset"))["integration"] == 5_000 * M

    await clock_to(sidecar, "zite-reset", FEB_1)
    assert (await left(sidecar, "zite-reset"))["integration"] == 50_000 * M
    assert (await use(sidecar, "zite-reset", "zite.email.send", 10_000)).allowed
    assert not (await use(sidecar, "zite-reset", "zite.integration")).allowed


async def test_exhausting_ai_credits_leaves_integration_credits_whole(sidecar: Sidecar) -> None:
    """Integration credits are separate from AI credits, in both directions.

    "Integration credits are separate from AI credits." With Free's 50 AI credits spent, an AI
    build message is refused while integrations keep running on all 1,000 integration credits;
    with those spent too, nothing of the AI allowance is touched.
    """
    await open_account(sidecar, "zite-ai", "zite_free")
    d = await use(sidecar, "zite-ai", "zite.ai.build", 50)
    assert (d.meter, debits(d.debits)) == ("ai_credit", [("ai", 50 * M)])
    d = await use(sidecar, "zite-ai", "zite.ai.build")
    assert (d.allowed, d.reason, d.shortfall) == (False, INSUFFICIENT, 1 * M)
    assert d.retry_at_unix_ms == FEB_1
    assert await left(sidecar, "zite-ai") == {"integration": 1000 * M, "ai": 0}

    d = await use(sidecar, "zite-ai", "zite.integration", 1000)
    assert (d.allowed, debits(d.debits)) == (True, [("integration", 1000 * M)])
    assert await left(sidecar, "zite-ai") == {"integration": 0, "ai": 0}


async def test_an_ai_action_cannot_use_integration_credits(sidecar: Sidecar) -> None:
    """AI credits pay for building, integration credits for runtime; never the other way round.

    "AI credits: used for building and modifying apps ... Integration credits: published app
    interactions with external services." AI credits exhausted and 950 integration credits
    left: the AI message is still refused, and the integration credits stay at 950. Spending
    all integration credits does not touch the AI allowance either.
    """
    await open_account(sidecar, "zite-ai2", "zite_free")
    assert (await use(sidecar, "zite-ai2", "zite.email.send", 10)).allowed
    assert (await use(sidecar, "zite-ai2", "zite.ai.build", 50)).allowed
    d = await use(sidecar, "zite-ai2", "zite.ai.build")
    assert (d.allowed, d.reason, list(d.debits)) == (False, INSUFFICIENT, [])
    assert await left(sidecar, "zite-ai2") == {"integration": 950 * M, "ai": 0}

    await open_account(sidecar, "zite-ai3", "zite_free")
    assert (await use(sidecar, "zite-ai3", "zite.integration", 1000)).allowed
    assert not (await use(sidecar, "zite-ai3", "zite.integration")).allowed
    d = await use(sidecar, "zite-ai3", "zite.ai.build", 50)
    assert (d.allowed, debits(d.debits)) == (True, [("ai", 50 * M)])


@pytest.mark.parametrize("action", ["zite.airtable", "zite.sheets", "zite.slack"])
async def test_airtable_sheets_slack_are_free_for_existing_customers(
    sidecar: Sidecar, action: str
) -> None:
    """Airtable, Sheets and Slack are free on the legacy Pro plan, 1 credit on today's Pro.

    "Integrations like Airtable, Google Sheets, and Slack are free for existing customers and do
    not consume integration credits." Existing customers are modelled as ``zite_pro_legacy``;
    new customers on ``zite_pro`` pay a standard integration's 1 credit.
    """
    await open_account(sidecar, "zite-old", "zite_pro_legacy")
    d = await use(sidecar, "zite-old", action, 700)
    assert (d.allowed, d.cost, list(d.debits)) == (True, 0, [])
    assert (await left(sidecar, "zite-old"))["integration"] == 50_000 * M

    await open_account(sidecar, "zite-new", "zite_pro")
    d = await use(sidecar, "zite-new", action, 700)
    assert (d.allowed, d.cost, debits(d.debits)) == (True, 700 * M, [("integration", 700 * M)])


async def test_upgrade_mid_month_keeps_this_months_usage(sidecar: Sidecar) -> None:
    """An upgrade mid-month gives the new plan's allowance minus what was already used.

    "Each plan includes a monthly integration credit allowance." Free with 800 integration and
    10 AI credits used, upgraded to Pro on Jan 20: 49,200 and 490 are left for January (not a
    fresh 50,000), and February starts with the full Pro allowance.
    """
    await open_account(sidecar, "zite-up", "zite_free")
    assert (await use(sidecar, "zite-up", "zite.email.send", 160)).allowed
    assert (await use(sidecar, "zite-up", "zite.ai.build", 10)).allowed
    await clock_to(sidecar, "zite-up", ms(2027, 1, 20))
    account = await sidecar.admin.UpdateAccount(
        admin_pb2.UpdateAccountRequest(account_id="zite-up", plan_id="zite_pro")
    )
    assert account.plan_id == "zite_pro"
    assert await left(sidecar, "zite-up") == {"integration": 49_200 * M, "ai": 490 * M}
    assert (await use(sidecar, "zite-up", "zite.integration", 49_200)).allowed
    assert not (await use(sidecar, "zite-up", "zite.integration")).allowed

    await clock_to(sidecar, "zite-up", FEB_1)
    assert await left(sidecar, "zite-up") == {"integration": 50_000 * M, "ai": 500 * M}


@pytest.mark.parametrize("action", ["zite.airtable", "zite.sheets", "zite.slack"])
async def test_the_existing_customer_flag_makes_them_free_on_any_plan(
    sidecar: Sidecar, action: str
) -> None:
    """The same rule without a duplicate plan: the account flag ``existing_customer``.

    Its plan's ``flag_prices`` make the three free; a standard integration still costs 1.
    """
    await open_account(sidecar, "zite-flag", "zite_business")
    flag = admin_pb2.Terms(flags=["existing_customer"])
    await sidecar.admin.SetTerms(admin_pb2.SetTermsRequest(account_id="zite-flag", terms=flag))
    d = await use(sidecar, "zite-flag", action, 700)
    assert (d.allowed, d.cost, list(d.debits)) == (True, 0, [])
    d = await use(sidecar, "zite-flag", "zite.integration", 3)
    assert debits(d.debits) == [("integration", 3 * M)]


async def test_enterprise_custom_allowances_are_per_account(sidecar: Sidecar) -> None:
    """Enterprise "Custom": 5,000,000 integration and 50,000 AI credits a month on zite_team.

    Set as overrides when the account is created; each month starts with them again.
    """
    custom = admin_pb2.Terms(allowances={"integration": 5_000_000 * M, "ai": 50_000 * M})
    await sidecar.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="zite-ent", plan_id="zite_team", terms=custom)
    )
    await clock_to(sidecar, "zite-ent", T0)
    assert await left(sidecar, "zite-ent") == {"integration": 5_000_000 * M, "ai": 50_000 * M}
    assert (await use(sidecar, "zite-ent", "zite.integration", 1_500_000)).allowed
    await clock_to(sidecar, "zite-ent", FEB_1)
    assert await left(sidecar, "zite-ent") == {"integration": 5_000_000 * M, "ai": 50_000 * M}
