"""Seed 004, agent platform credits (../shared/seeds/004_90475977aa25e9ee.txt), over gRPC.

Plans ``agent_free``, ``agent_team`` and ``agent_scale`` of examples/demo.yaml; action
``agent.message`` costs 1 credit on the Light model, 3 on Pro, 10 on Ultra. Rules exercised:

- consumption order: daily -> bonus -> premium -> pay-as-you-go;
- daily credits (100 a day) serve only the Light model in chat; anything else skips them; they
  refresh at UTC midnight and unused ones do not carry over;
- bonus credits never expire; a promotional grant given an expiry date lapses at that instant;
- premium credits reset each billing cycle (the account's anchor day), per seat (SetTerms);
- PAYG ($0.10 a credit) only when enabled, never during a trial, not on Free; its monthly cap
  (minimum $100, maximum by tier) blocks usage above it with SPEND_CAP_REACHED until the cycle
  resets; lowering the cap refunds nothing;
- a charge spanning daily + bonus + premium + PAYG is all or nothing;
- CheckAndConsumeBatch decides for several accounts at once, in request order.

Every account's test clock is first moved to 2027-01-15T12:00Z; billing cycles renew on the 15th.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from scenario_kit import clock_to, debits, ms

from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar

M = 1_000_000  # micro-units per credit or per USD
USD = M
CREDIT_PRICE = 100_000  # $0.10 in micro-USD
ALLOWED = quota_pb2.REASON_ALLOWED
INSUFFICIENT = quota_pb2.REASON_INSUFFICIENT_CREDITS
CAP = quota_pb2.REASON_SPEND_CAP_REACHED
LIGHT_CHAT = {"model": "light", "feature": "chat"}
LIGHT_AGENTS = {"model": "light", "feature": "agents"}


T0 = ms(2027, 1, 15, 12)
JAN_16 = ms(2027, 1, 16)
FEB_15 = ms(2027, 2, 15)


async def open_account(
    sc: Sidecar,
    account_id: str,
    plan: str,
    *,
    payg: bool = False,
    status: admin_pb2.AccountStatus = admin_pb2.ACCOUNT_STATUS_ACTIVE,
) -> None:
    await sc.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(
            account_id=account_id, plan_id=plan, anchor_day=15, status=status
        )
    )
    await clock_to(sc, account_id, T0)
    if payg:
        await set_payg(sc, account_id, enabled=True)


async def set_payg(
    sc: Sidecar, account_id: str, *, enabled: bool | None = None, cap: int | None = None
) -> admin_pb2.Account:
    return await sc.admin.SetPoolSettings(
        admin_pb2.SetPoolSettingsRequest(
            account_id=account_id, pool_id="payg", enabled=enabled, cap=cap
        )
    )


async def bonus(
    sc: Sidecar, account_id: str, credits_: int, grant_id: str, expires_at: int = 0
) -> int:
    g = await sc.admin.Grant(
        admin_pb2.GrantRequest(
            account_id=account_id,
            pool_id="bonus",
            amount=credits_ * M,
            grant_id=grant_id,
            expires_at_unix_ms=expires_at,
            note="referral",
        )
    )
    return g.balance


async def send(
    sc: Sidecar,
    account_id: str,
    quantity: int,
    attributes: dict[str, str],
) -> quota_pb2.Decision:
    return await sc.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(
            account_id=account_id, action="agent.message", quantity=quantity, attributes=attributes
        )
    )


async def balance(sc: Sidecar, account_id: str) -> quota_pb2.GetBalanceResponse:
    return await sc.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=account_id))


async def left(sc: Sidecar, account_id: str) -> dict[str, int]:
    """Each pool's balance: credits (micro) or, for PAYG, micro-USD the cap still allows."""
    return {p.pool_id: p.balance for p in (await balance(sc, account_id)).pools}


# --- consumption order ---------------------------------------------------------------------------


async def test_consumption_order_daily_bonus_premium_payg(sidecar: Sidecar) -> None:
    """Credits are consumed daily, then bonus, then premium, then pay-as-you-go.

    "When you use credits, they are consumed in this order: 1 Daily Credits, 2 Bonus Credits,
    3 Premium Credits, 4 Pay-As-You-Go ... Charged at $0.10/credit." Team with 50 bonus credits
    and PAYG on: 2,155 Light chat credits take 100 daily, 50 bonus, 2,000 premium and 5 PAYG
    credits ($0.50).
    """
    await open_account(sidecar, "ag-order", "agent_team", payg=True)
    assert await bonus(sidecar, "ag-order", 50, "referral-1") == 50 * M
    d = await send(sidecar, "ag-order", 2155, LIGHT_CHAT)
    assert (d.allowed, d.reason, d.cost, d.meter) == (True, ALLOWED, 2155 * M, "agent_credit")
    assert [(x.pool_id, x.amount, x.unit, x.covered) for x in d.debits] == [
        ("daily", 100 * M, "agent_credit", 100 * M),
        ("bonus", 50 * M, "agent_credit", 50 * M),
        ("premium", 2000 * M, "agent_credit", 2000 * M),
        ("payg", 5 * CREDIT_PRICE, "usd", 5 * M),
    ]
    payg = next(p for p in (await balance(sidecar, "ag-order")).pools if p.pool_id == "payg")
    assert (payg.spent, payg.cap, payg.balance, payg.spend_unit, payg.enabled) == (
        500_000,
        100 * USD,
        100 * USD - 500_000,
        "usd",
        True,
    )


async def test_daily_credits_serve_only_light_model_chat(sidecar: Sidecar) -> None:
    """Daily credits are skipped by any other model or feature.

    "Every plan gets 100 free daily credits that refresh every day, for the Light model and chat
    only." "Premium credits ... unlock all models and all features." On Team a Pro-model chat
    (3 credits), an Ultra chat (10) and a Light agents run (1) all come out of premium; only the
    Light chat takes a daily credit.
    """
    await open_account(sidecar, "ag-scope", "agent_team")
    d = await send(sidecar, "ag-scope", 1, {"model": "pro", "feature": "chat"})
    assert (d.cost, debits(d.debits)) == (3 * M, [("premium", 3 * M)])
    d = await send(sidecar, "ag-scope", 1, {"model": "ultra", "feature": "chat"})
    assert debits(d.debits) == [("premium", 10 * M)]
    d = await send(sidecar, "ag-scope", 1, LIGHT_AGENTS)
    assert debits(d.debits) == [("premium", 1 * M)]
    d = await send(sidecar, "ag-scope", 1, LIGHT_CHAT)
    assert debits(d.debits) == [("daily", 1 * M)]
    assert await left(sidecar, "ag-scope") == {
        "daily": 99 * M,
        "bonus": 0,
        "premium": 1986 * M,
        "payg": 100 * USD,
    }


async def test_free_plan_daily_credits_do_not_pay_for_pro_model_or_other_features(
    sidecar: Sidecar,
) -> None:
    """On Free, only Light chat can run on daily credits; the rest needs bonus credits.

    "Daily Credits: 100 free credits that reset every day, for the Light model and chat only.
    Available on all plans." With 100 daily credits and no bonus, a Pro-model chat or a Light
    code review is refused (and no reset will fix it: retry_at 0); a bonus grant pays for it.
    """
    await open_account(sidecar, "ag-free", "agent_free")
    for attributes in (
        {"model": "pro", "feature": "chat"},
        {"model": "light", "feature": "code_review"},
    ):
        d = await send(sidecar, "ag-free", 1, attributes)
        assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, INSUFFICIENT, 0)
    assert await left(sidecar, "ag-free") == {"daily": 100 * M, "bonus": 0}
    await bonus(sidecar, "ag-free", 5, "promo-1")
    d = await send(sidecar, "ag-free", 1, {"model": "pro", "feature": "chat"})
    assert (d.allowed, debits(d.debits)) == (True, [("bonus", 3 * M)])


async def test_daily_credits_refresh_at_utc_midnight_without_carry_over(sidecar: Sidecar) -> None:
    """Daily credits refresh at 00:00 UTC; unused ones do not carry over.

    "100 free credits that reset every day." The 101st Light chat of Jan 15 is refused until
    Jan 16 00:00 UTC (not a moment before); 30 used on Jan 16 leave 70, and Jan 17 starts
    with 100, not 170.
    """
    await open_account(sidecar, "ag-day", "agent_free")
    assert (await send(sidecar, "ag-day", 100, LIGHT_CHAT)).allowed
    d = await send(sidecar, "ag-day", 1, LIGHT_CHAT)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, INSUFFICIENT, JAN_16)

    await clock_to(sidecar, "ag-day", JAN_16 - 1)
    assert not (await send(sidecar, "ag-day", 1, LIGHT_CHAT)).allowed
    await clock_to(sidecar, "ag-day", JAN_16)
    assert (await send(sidecar, "ag-day", 30, LIGHT_CHAT)).allowed
    assert (await left(sidecar, "ag-day"))["daily"] == 70 * M

    await clock_to(sidecar, "ag-day", ms(2027, 1, 17, 9))
    daily = next(p for p in (await balance(sidecar, "ag-day")).pools if p.pool_id == "daily")
    assert (daily.balance, daily.next_reset_unix_ms) == (100 * M, ms(2027, 1, 18))


# --- bonus and premium ---------------------------------------------------------------------------


async def test_bonus_credits_never_expire(sidecar: Sidecar) -> None:
    """Bonus credits survive every daily refresh and billing cycle.

    "Bonus Credits: Promotional credits from referrals or special offers. They work with all
    models and never expire." 25 referral credits granted in January 2027 are all still there
    after 13 billing cycles, and pay for a Pro-model chat.
    """
    await open_account(sidecar, "ag-bonus", "agent_team")
    await bonus(sidecar, "ag-bonus", 25, "referral-1")
    await clock_to(sidecar, "ag-bonus", ms(2028, 2, 20))
    pool = next(p for p in (await balance(sidecar, "ag-bonus")).pools if p.pool_id == "bonus")
    assert (pool.kind, pool.balance, pool.next_reset_unix_ms) == ("grant", 25 * M, 0)
    assert [(lot.lot_id, lot.balance, lot.expires_at_unix_ms) for lot in pool.lots] == [
        ("referral-1", 25 * M, 0)
    ]
    d = await send(sidecar, "ag-bonus", 1, {"model": "pro", "feature": "chat"})
    assert debits(d.debits) == [("bonus", 3 * M)]


async def test_promotional_grant_with_an_expiry_lapses(sidecar: Sidecar) -> None:
    """A promotional grant given an expiry date is used first and lapses at that instant.

    The seed says bonus credits "never expire"; a special offer may still come with an end date
    (Grant with expires_at). Such credits are spent before the never-expiring ones and what is
    left of them disappears at the expiry; the referral credits stay. An expiry in the past is
    refused.
    """
    await open_account(sidecar, "ag-promo", "agent_team")
    await bonus(sidecar, "ag-promo", 10, "referral-1")
    assert await bonus(sidecar, "ag-promo", 40, "promo-jan", expires_at=ms(2027, 2, 1)) == 50 * M
    d = await send(sidecar, "ag-promo", 3, {"model": "pro", "feature": "chat"})
    assert debits(d.debits) == [("bonus", 9 * M)]
    pool = next(p for p in (await balance(sidecar, "ag-promo")).pools if p.pool_id == "bonus")
    assert [(lot.lot_id, lot.balance, lot.expires_at_unix_ms) for lot in pool.lots] == [
        ("promo-jan", 31 * M, ms(2027, 2, 1)),
        ("referral-1", 10 * M, 0),
    ]

    await clock_to(sidecar, "ag-promo", ms(2027, 2, 1))
    pool = next(p for p in (await balance(sidecar, "ag-promo")).pools if p.pool_id == "bonus")
    assert (pool.balance, [lot.lot_id for lot in pool.lots]) == (10 * M, ["referral-1"])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bonus(sidecar, "ag-promo", 5, "promo-old", expires_at=ms(2027, 1, 20))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_premium_credits_reset_each_billing_cycle(sidecar: Sidecar) -> None:
    """Premium credits reset on the billing-cycle date; unused ones do not carry over.

    "Premium Credits: Your plan's per-seat credit allocation, reset each billing cycle." Team,
    cycle on the 15th: 1,500 of 2,000 used on Jan 15 leave 500 until Feb 15 00:00 UTC, when the
    allocation is 2,000 again (not 2,500).
    """
    await open_account(sidecar, "ag-prem", "agent_team")
    assert (await send(sidecar, "ag-prem", 1500, LIGHT_AGENTS)).allowed
    await clock_to(sidecar, "ag-prem", FEB_15 - 1)
    assert (await left(sidecar, "ag-prem"))["premium"] == 500 * M
    await clock_to(sidecar, "ag-prem", FEB_15)
    prem = next(p for p in (await balance(sidecar, "ag-prem")).pools if p.pool_id == "premium")
    assert (prem.balance, prem.next_reset_unix_ms) == (2000 * M, ms(2027, 3, 15))


async def test_premium_credits_are_per_seat_and_follow_seats_added_mid_cycle(
    sidecar: Sidecar,
) -> None:
    """Premium credits are "your plan's per-seat credit allocation"; seats change mid-cycle.

    "Change plan, add seats, and review usage and quotas." Team with 3 seats: 6,000 premium
    credits. 5,000 used, then a 4th seat on Jan 20 adds its 2,000 at once (3,000 left); back to
    2 seats leaves nothing this cycle (use is kept); Feb 15 starts with 2 x 2,000.
    """
    await open_account(sidecar, "ag-seats", "agent_team")
    terms = admin_pb2.SetTermsRequest(account_id="ag-seats", terms=admin_pb2.Terms(seats=3))
    assert (await sidecar.admin.SetTerms(terms)).terms.seats == 3
    assert (await left(sidecar, "ag-seats"))["premium"] == 6000 * M
    assert (await send(sidecar, "ag-seats", 5000, LIGHT_AGENTS)).allowed
    await clock_to(sidecar, "ag-seats", ms(2027, 1, 20))
    terms.terms.seats = 4
    await sidecar.admin.SetTerms(terms)
    assert (await left(sidecar, "ag-seats"))["premium"] == 3000 * M
    terms.terms.seats = 2
    await sidecar.admin.SetTerms(terms)
    assert (await left(sidecar, "ag-seats"))["premium"] == 0
    await clock_to(sidecar, "ag-seats", FEB_15)
    assert (await left(sidecar, "ag-seats"))["premium"] == 4000 * M


# --- pay-as-you-go -------------------------------------------------------------------------------


async def test_payg_only_when_enabled(sidecar: Sidecar) -> None:
    """PAYG kicks in only while enabled; the toggle takes effect immediately.

    "Pay-As-You-Go: Automatic top-up when all other credits are exhausted. Charged at
    $0.10/credit. Only if PAYG is enabled." Team, premium spent, PAYG off: refused until the
    cycle resets; switched on, a Pro-model run costs 3 x $0.10; switched off, refused again.
    """
    await open_account(sidecar, "ag-payg", "agent_team")
    assert (await send(sidecar, "ag-payg", 2000, LIGHT_AGENTS)).allowed
    d = await send(sidecar, "ag-payg", 1, LIGHT_AGENTS)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, INSUFFICIENT, FEB_15)

    account = await set_payg(sidecar, "ag-payg", enabled=True)
    assert [(p.pool_id, p.enabled, p.cap, p.unit) for p in account.pools] == [
        ("payg", True, 100 * USD, "usd")
    ]
    d = await send(sidecar, "ag-payg", 1, {"model": "pro", "feature": "agents"})
    assert (d.allowed, debits(d.debits)) == (True, [("payg", 3 * CREDIT_PRICE)])

    await set_payg(sidecar, "ag-payg", enabled=False)
    d = await send(sidecar, "ag-payg", 1, LIGHT_AGENTS)
    assert (d.allowed, d.reason) == (False, INSUFFICIENT)


async def test_payg_is_locked_during_the_trial(sidecar: Sidecar) -> None:
    """During a trial PAYG does not pay, even when enabled; after the trial it does.

    "PAYG is not available on the Free plan, and is locked during the trial period."
    """
    await open_account(
        sidecar, "ag-trial", "agent_team", payg=True, status=admin_pb2.ACCOUNT_STATUS_TRIAL
    )
    assert (await balance(sidecar, "ag-trial")).status == "trial"
    assert (await send(sidecar, "ag-trial", 2000, LIGHT_AGENTS)).allowed
    d = await send(sidecar, "ag-trial", 1, LIGHT_AGENTS)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, INSUFFICIENT, FEB_15)
    assert (await left(sidecar, "ag-trial"))["payg"] == 100 * USD

    await sidecar.admin.UpdateAccount(
        admin_pb2.UpdateAccountRequest(
            account_id="ag-trial", status=admin_pb2.ACCOUNT_STATUS_ACTIVE
        )
    )
    d = await send(sidecar, "ag-trial", 1, LIGHT_AGENTS)
    assert (d.allowed, debits(d.debits)) == (True, [("payg", CREDIT_PRICE)])


async def test_payg_is_not_available_on_free(sidecar: Sidecar) -> None:
    """Free has no PAYG pool to enable: "PAYG is not available on the Free plan"."""
    await open_account(sidecar, "ag-nopayg", "agent_free")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_payg(sidecar, "ag-nopayg", enabled=True)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(await left(sidecar, "ag-nopayg")) == ["daily", "bonus"]


async def test_payg_stops_at_the_monthly_cap_until_the_next_cycle(sidecar: Sidecar) -> None:
    """Usage above the PAYG cap is blocked until the next billing cycle.

    "Once the cap is reached, PAYG stops until the next cycle." Team's default $100 cap buys
    1,000 PAYG credits; the 1,001st is refused with SPEND_CAP_REACHED and retry_at Feb 15. Light
    chat still runs on daily credits. On Feb 15 the cycle's PAYG spend starts at $0.
    """
    await open_account(sidecar, "ag-cap", "agent_team", payg=True)
    assert (await send(sidecar, "ag-cap", 2000 + 1000, LIGHT_AGENTS)).allowed
    payg = next(p for p in (await balance(sidecar, "ag-cap")).pools if p.pool_id == "payg")
    assert (payg.spent, payg.cap, payg.balance) == (100 * USD, 100 * USD, 0)

    d = await send(sidecar, "ag-cap", 1, LIGHT_AGENTS)
    assert (d.allowed, d.reason, d.shortfall) == (False, CAP, 1 * M)
    assert d.retry_at_unix_ms == FEB_15
    d = await send(sidecar, "ag-cap", 1, LIGHT_CHAT)
    assert (d.allowed, debits(d.debits)) == (True, [("daily", 1 * M)])

    await clock_to(sidecar, "ag-cap", FEB_15)
    payg = next(p for p in (await balance(sidecar, "ag-cap")).pools if p.pool_id == "payg")
    assert (payg.spent, payg.balance) == (0, 100 * USD)
    assert payg.next_reset_unix_ms == ms(2027, 3, 15)


@pytest.mark.parametrize(
    ("plan", "cap", "ok"),
    [
        ("agent_team", 50 * USD, False),
        ("agent_team", 100 * USD - 1, False),
        ("agent_team", 100 * USD, True),
        ("agent_team", 1000 * USD, True),
        ("agent_team", 1000 * USD + 1, False),
        ("agent_team", -1, False),
        ("agent_scale", 10_000 * USD, True),
        ("agent_scale", 10_001 * USD, False),
    ],
)
async def test_cap_minimum_is_100_and_maximum_depends_on_tier(
    sidecar: Sidecar, plan: str, cap: int, *, ok: bool
) -> None:
    """The PAYG cap is at least $100 and at most the tier's maximum (Team $1,000, Scale $10,000).

    "Spending cap: Set your own monthly limit — minimum $100; maximum depends on your plan
    tier." A cap out of range is INVALID_ARGUMENT and leaves the old cap in place.
    """
    await open_account(sidecar, "ag-bounds", plan)
    before = (
        (await sidecar.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="ag-bounds")))
        .pools[0]
        .cap
    )
    if ok:
        account = await set_payg(sidecar, "ag-bounds", cap=cap)
        assert account.pools[0].cap == cap
        return
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_payg(sidecar, "ag-bounds", cap=cap)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = await sidecar.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="ag-bounds"))
    assert after.pools[0].cap == before


async def test_lowering_the_cap_does_not_refund_usage(sidecar: Sidecar) -> None:
    """Lowering the cap mid-cycle keeps what was already charged.

    "Lowering the cap mid-cycle does not refund usage already incurred." Scale ($500 default
    cap): $300 of PAYG used, cap lowered to $100: the cycle's spend stays $300, nothing is left
    under the cap, and the premium credits stay spent.
    """
    await open_account(sidecar, "ag-lower", "agent_scale", payg=True)
    assert (await send(sidecar, "ag-lower", 10_000 + 3000, LIGHT_AGENTS)).allowed
    account = await set_payg(sidecar, "ag-lower", cap=100 * USD)
    assert account.pools[0].cap == 100 * USD
    payg = next(p for p in (await balance(sidecar, "ag-lower")).pools if p.pool_id == "payg")
    assert (payg.spent, payg.cap, payg.balance) == (300 * USD, 100 * USD, 0)
    assert (await left(sidecar, "ag-lower"))["premium"] == 0


async def test_lowering_the_cap_below_spend_blocks_payg_only(sidecar: Sidecar) -> None:
    """A cap lowered below this cycle's spend blocks PAYG, not the other credits.

    "Once the cap is reached, PAYG stops until the next cycle ... usage above the cap is blocked
    until the next billing cycle." Seed 004 stops PAYG only (unlike seed 000, whose apps all
    stop): a PAYG-paid run is refused with SPEND_CAP_REACHED (retry at the cycle reset), while
    the daily Light chat credits and a new bonus grant keep working; the next cycle allows
    PAYG again up to the new $100 cap.
    """
    await open_account(sidecar, "ag-lower2", "agent_scale", payg=True)
    assert (await send(sidecar, "ag-lower2", 10_000 + 3000, LIGHT_AGENTS)).allowed
    await set_payg(sidecar, "ag-lower2", cap=100 * USD)
    d = await send(sidecar, "ag-lower2", 1, LIGHT_AGENTS)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, CAP, FEB_15)
    d = await send(sidecar, "ag-lower2", 1, LIGHT_CHAT)
    assert (d.allowed, debits(d.debits)) == (True, [("daily", 1 * M)])
    await bonus(sidecar, "ag-lower2", 5, "referral-1")
    d = await send(sidecar, "ag-lower2", 5, LIGHT_AGENTS)
    assert (d.allowed, debits(d.debits)) == (True, [("bonus", 5 * M)])

    await clock_to(sidecar, "ag-lower2", FEB_15)
    assert (await send(sidecar, "ag-lower2", 10_000 + 1000, LIGHT_AGENTS)).allowed
    assert (await send(sidecar, "ag-lower2", 1, LIGHT_AGENTS)).reason == CAP


# --- all or nothing, batches ---------------------------------------------------------------------


@pytest.mark.parametrize(("payg", "reason"), [(False, INSUFFICIENT), (True, CAP)])
async def test_a_charge_one_credit_too_big_changes_nothing(
    sidecar: Sidecar, *, payg: bool, reason: quota_pb2.Reason
) -> None:
    """A charge spanning daily, bonus, premium and PAYG is all or nothing.

    The consumption order walks four pools; a request that all of them together cannot cover
    by one credit is refused whole: GetBalance is identical before and after. Without PAYG the
    limit is 100 + 50 + 2,000 credits; with it, 1,000 more ($100 cap).
    """
    await open_account(sidecar, "ag-atomic", "agent_team", payg=payg)
    await bonus(sidecar, "ag-atomic", 50, "referral-1")
    total = 100 + 50 + 2000 + (1000 if payg else 0)
    before = await balance(sidecar, "ag-atomic")

    d = await send(sidecar, "ag-atomic", total + 1, LIGHT_CHAT)
    assert (d.allowed, d.reason, d.shortfall, list(d.debits)) == (False, reason, 1 * M, [])
    assert await balance(sidecar, "ag-atomic") == before

    d = await send(sidecar, "ag-atomic", total, LIGHT_CHAT)
    assert d.allowed
    assert [x.pool_id for x in d.debits] == ["daily", "bonus", "premium"] + (
        ["payg"] if payg else []
    )
    after = await left(sidecar, "ag-atomic")
    assert (after["daily"], after["bonus"], after["premium"]) == (0, 0, 0)
    assert after["payg"] == (0 if payg else 100 * USD)  # unused while disabled


async def test_batch_decides_for_several_accounts_in_order(sidecar: Sidecar) -> None:
    """CheckAndConsumeBatch gives one decision per request, in request order.

    Team account: a Light chat from daily credits, an Ultra chat from premium; Free account with
    its daily credits used: refused until midnight UTC; an unknown account and an unknown
    action get their own answers without failing the batch.
    """
    await open_account(sidecar, "ag-team", "agent_team")
    await open_account(sidecar, "ag-free", "agent_free")
    assert (await send(sidecar, "ag-free", 100, LIGHT_CHAT)).allowed

    def req(
        account_id: str,
        attributes: dict[str, str],
        action: str = "agent.message",
    ) -> quota_pb2.CheckAndConsumeRequest:
        return quota_pb2.CheckAndConsumeRequest(
            account_id=account_id, action=action, quantity=1, attributes=attributes
        )

    out = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(
            requests=[
                req("ag-team", LIGHT_CHAT),
                req("ag-free", LIGHT_CHAT),
                req("ag-team", {"model": "ultra", "feature": "chat"}),
                req("ag-nobody", LIGHT_CHAT),
                req("ag-team", {}, "agent.teleport"),
            ]
        )
    )
    team_chat, free_chat, team_ultra, nobody, unknown = out.decisions
    assert (team_chat.allowed, debits(team_chat.debits)) == (True, [("daily", 1 * M)])
    assert (free_chat.allowed, free_chat.reason, free_chat.retry_at_unix_ms) == (
        False,
        INSUFFICIENT,
        JAN_16,
    )
    assert (team_ultra.allowed, debits(team_ultra.debits)) == (True, [("premium", 10 * M)])
    assert (nobody.allowed, nobody.reason) == (False, quota_pb2.REASON_UNSPECIFIED)
    assert nobody.message.startswith("NOT_FOUND")
    assert (unknown.allowed, unknown.reason) == (False, quota_pb2.REASON_UNKNOWN_ACTION)
    assert await left(sidecar, "ag-team") == {
        "daily": 99 * M,
        "bonus": 0,
        "premium": 1990 * M,
        "payg": 100 * USD,
    }
