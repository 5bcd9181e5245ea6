"""Seed 000, Integration Glue (../shared/seeds/000_cbdec0ef0c8e06c2.txt), end to end over gRPC.

Plans ``glue_free``, ``glue_starter`` and ``glue_pro`` of examples/demo.yaml. Rules exercised:

- the free tier's 100 credits are a hard stop: everything is denied until the monthly renewal,
  which falls on the account's renewal (anchor) day, clamped to short months;
- included credits do not roll over;
- paid tiers buy overage upfront in blocks of 1,000 credits at the tier's price, block after
  block, until the Maximum Auto Top Up Spend of the month (then SPEND_CAP_REACHED);
- the maximum spend can be raised or lowered at any time and takes effect immediately; lowered
  below this month's spend, ALL actions stop until the renewal, then resume;
- the free tier has no overage pool.

Every account's test clock is first moved to 2027-01-15T12:00Z, so renewals are exact instants.
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
ALLOWED = quota_pb2.REASON_ALLOWED
INSUFFICIENT = quota_pb2.REASON_INSUFFICIENT_CREDITS
CAP = quota_pb2.REASON_SPEND_CAP_REACHED
STOPPED = quota_pb2.REASON_ACCOUNT_STOPPED


T0 = ms(2027, 1, 15, 12)
FEB_15 = ms(2027, 2, 15)  # the renewal after T0 for an account renewing on the 15th


async def open_account(sc: Sidecar, account_id: str, plan: str, anchor_day: int = 15) -> None:
    await sc.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=account_id, plan_id=plan, anchor_day=anchor_day)
    )
    await clock_to(sc, account_id, T0)


async def run(
    sc: Sidecar, account_id: str, quantity: int, action: str = "glue.app_action"
) -> quota_pb2.Decision:
    """Charge ``quantity`` runs of ``action`` (one credit each, except hosting) at once."""
    return await sc.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(account_id=account_id, action=action, quantity=quantity)
    )


async def pools(sc: Sidecar, account_id: str) -> dict[str, quota_pb2.PoolBalance]:
    bal = await sc.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=account_id))
    return {p.pool_id: p for p in bal.pools}


async def set_max_spend(sc: Sidecar, account_id: str, usd: int) -> admin_pb2.Account:
    return await sc.admin.SetPoolSettings(
        admin_pb2.SetPoolSettingsRequest(account_id=account_id, pool_id="overage", cap=usd * M)
    )


# --- free tier -----------------------------------------------------------------------------------


async def test_free_tier_stops_at_100_credits_until_renewal(sidecar: Sidecar) -> None:
    """Free tier: a hard stop at 100 credits until the monthly renewal, then it works again.

    "On the free tier, if you exceed your 100 credits, all apps will stop running until your
    monthly renewal." The 101st credit is denied (retry at the renewal) up to the last
    millisecond before it; on the renewal date the account works again.
    """
    await open_account(sidecar, "glue-free", "glue_free")
    assert (await run(sidecar, "glue-free", 100)).allowed

    d = await run(sidecar, "glue-free", 1)
    assert (d.allowed, d.reason, d.shortfall) == (False, INSUFFICIENT, 1 * M)
    assert d.retry_at_unix_ms == FEB_15
    d = await run(sidecar, "glue-free", 1, "glue.record_update")
    assert (d.allowed, d.retry_at_unix_ms) == (False, FEB_15)

    await clock_to(sidecar, "glue-free", FEB_15 - 1)
    assert not (await run(sidecar, "glue-free", 1)).allowed

    await clock_to(sidecar, "glue-free", FEB_15)
    d = await run(sidecar, "glue-free", 1)
    assert (d.allowed, d.reason, debits(d.debits)) == (True, ALLOWED, [("base", 1 * M)])
    assert (await pools(sidecar, "glue-free"))["base"].balance == 99 * M


async def test_included_credits_do_not_roll_over(sidecar: Sidecar) -> None:
    """Unused included credits do not roll over to the next month.

    "Credits included as part of your license do not roll over; they expire on your monthly
    renewal date." 60 unused credits in January do not add to February's 100.
    """
    await open_account(sidecar, "glue-free", "glue_free")
    assert (await run(sidecar, "glue-free", 40)).allowed
    assert (await pools(sidecar, "glue-free"))["base"].balance == 60 * M

    await clock_to(sidecar, "glue-free", FEB_15)
    base = (await pools(sidecar, "glue-free"))["base"]
    assert (base.balance, base.next_reset_unix_ms) == (100 * M, ms(2027, 3, 15))
    assert not (await run(sidecar, "glue-free", 101)).allowed


async def test_free_tier_has_no_overage_pool(sidecar: Sidecar) -> None:
    """The free tier has no overage pool and no maximum spend.

    "On paid tiers ... you will be charged an overage": the
    free plan has no overage pool and no maximum spend to set.
    """
    await open_account(sidecar, "glue-free", "glue_free")
    assert list(await pools(sidecar, "glue-free")) == ["base"]
    account = await sidecar.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="glue-free"))
    assert list(account.pools) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_max_spend(sidecar, "glue-free", 100)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_renewal_on_anchor_day_31_is_clamped_to_february_28(sidecar: Sidecar) -> None:
    """A renewal date of the 31st falls on Feb 28 in February.

    "Credits reset every month on your renewal date": an account renewing on the 31st renews
    on Jan 31, then on Feb 28 (2027 is not a leap year), then on Mar 31.
    """
    await open_account(sidecar, "glue-31", "glue_free", anchor_day=31)
    assert (await pools(sidecar, "glue-31"))["base"].next_reset_unix_ms == ms(2027, 1, 31)

    await clock_to(sidecar, "glue-31", ms(2027, 1, 31))
    assert (await pools(sidecar, "glue-31"))["base"].next_reset_unix_ms == ms(2027, 2, 28)
    assert (await run(sidecar, "glue-31", 100)).allowed
    await clock_to(sidecar, "glue-31", ms(2027, 2, 27, 23, 59) + 59_000)
    d = await run(sidecar, "glue-31", 1)
    assert (d.allowed, d.retry_at_unix_ms) == (False, ms(2027, 2, 28))

    await clock_to(sidecar, "glue-31", ms(2027, 2, 28))
    assert (await run(sidecar, "glue-31", 1)).allowed
    base = (await pools(sidecar, "glue-31"))["base"]
    assert (base.balance, base.next_reset_unix_ms) == (99 * M, ms(2027, 3, 31))


# --- paid tiers: overage blocks ------------------------------------------------------------------


async def test_overage_is_billed_upfront_in_blocks_of_1000_until_max_spend(
    sidecar: Sidecar,
) -> None:
    """Overage: 1,000-credit blocks billed upfront, one after another, up to the maximum spend.

    "Overages are billed upfront in blocks of 1,000 credits ... additional blocks of 1,000
    credits will be charged automatically until you ... reach your Maximum Auto Top Up Spend for
    the month." Starter: 2,000 included credits, $20 a block, maximum spend $100 (5 blocks).
    """
    await open_account(sidecar, "glue-starter", "glue_starter")
    d = await run(sidecar, "glue-starter", 2000)
    assert debits(d.debits) == [("base", 2000 * M)]

    # The 2,001st credit buys a whole block upfront: $20 spent, 999 credits left in it.
    d = await run(sidecar, "glue-starter", 1)
    assert (d.allowed, debits(d.debits)) == (True, [("overage", 1 * M)])
    assert d.debits[0].remaining == 999 * M
    over = (await pools(sidecar, "glue-starter"))["overage"]
    assert (over.balance, over.spent, over.cap, over.spend_unit) == (
        999 * M,
        20 * M,
        100 * M,
        "usd",
    )

    # 999 use up the block without buying another; 2,500 more buy three blocks ($60).
    assert (await run(sidecar, "glue-starter", 999)).allowed
    assert (await pools(sidecar, "glue-starter"))["overage"].spent == 20 * M
    assert (await run(sidecar, "glue-starter", 2500)).allowed
    over = (await pools(sidecar, "glue-starter"))["overage"]
    assert (over.balance, over.spent) == (500 * M, 80 * M)

    # 1,501 more would need two blocks ($120 > $100): refused, nothing bought or taken.
    d = await run(sidecar, "glue-starter", 1501)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, CAP, FEB_15)
    over = (await pools(sidecar, "glue-starter"))["overage"]
    assert (over.balance, over.spent) == (500 * M, 80 * M)

    # 1,500 fit in what is left plus one block: exactly $100.
    assert (await run(sidecar, "glue-starter", 1500)).allowed
    over = (await pools(sidecar, "glue-starter"))["overage"]
    assert (over.balance, over.spent) == (0, 100 * M)
    d = await run(sidecar, "glue-starter", 1)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, CAP, FEB_15)
    assert d.message


async def test_block_price_depends_on_the_tier(sidecar: Sidecar) -> None:
    """The price of an overage block depends on the tier.

    "The price per 1,000 overage credits depends on your plan tier": Pro (10,000 included
    credits) pays $15 a block, Starter $20.
    """
    await open_account(sidecar, "glue-pro", "glue_pro")
    assert (await run(sidecar, "glue-pro", 10_001)).allowed
    over = (await pools(sidecar, "glue-pro"))["overage"]
    assert (over.balance, over.spent, over.cap) == (999 * M, 15 * M, 500 * M)


async def test_renewal_resets_overage_spend_and_included_credits(sidecar: Sidecar) -> None:
    """The renewal resets the month: overage spend, included credits, the unused block.

    "Credits reset every month on your renewal date and do not carry over": on renewal the
    month's overage spend starts at $0 again, the included credits are whole again, and the
    unused part of a purchased block does not carry over either.
    """
    await open_account(sidecar, "glue-starter", "glue_starter")
    assert (await run(sidecar, "glue-starter", 2000 + 5000)).allowed
    assert not (await run(sidecar, "glue-starter", 1)).allowed  # $100 spent, block used up

    await clock_to(sidecar, "glue-starter", FEB_15)
    p = await pools(sidecar, "glue-starter")
    assert (p["base"].balance, p["overage"].balance, p["overage"].spent) == (2000 * M, 0, 0)
    assert p["overage"].next_reset_unix_ms == ms(2027, 3, 15)
    assert (await run(sidecar, "glue-starter", 2001)).allowed
    assert (await pools(sidecar, "glue-starter"))["overage"].spent == 20 * M


async def test_upgrading_for_a_busy_month_keeps_the_months_usage(sidecar: Sidecar) -> None:
    """Upgrading mid-month keeps the credits already used and switches the block price.

    "If you know you will have a higher-volume month, you can upgrade your plan and then
    downgrade again": moving Starter -> Pro mid-month keeps the credits already used (10,000 -
    1,500 left), and the next overage block is billed at Pro's $15.
    """
    await open_account(sidecar, "glue-up", "glue_starter")
    assert (await run(sidecar, "glue-up", 1500)).allowed
    await sidecar.admin.UpdateAccount(
        admin_pb2.UpdateAccountRequest(account_id="glue-up", plan_id="glue_pro")
    )
    assert (await pools(sidecar, "glue-up"))["base"].balance == 8500 * M
    assert (await run(sidecar, "glue-up", 8501)).allowed
    assert (await pools(sidecar, "glue-up"))["overage"].spent == 15 * M


# --- Maximum Auto Top Up Spend -------------------------------------------------------------------


async def test_raising_max_spend_takes_effect_immediately(sidecar: Sidecar) -> None:
    """Changing the Maximum Auto Top Up Spend takes effect immediately.

    "You can change your account's maximum spend at any time; updates take effect
    immediately." At the $100 maximum the next block is refused; raised to $140, two more blocks
    go through at once; lowered back to exactly this month's $140 nothing stops (the spend is not
    above it) but no further block is bought.
    """
    await open_account(sidecar, "glue-max", "glue_starter")
    assert (await run(sidecar, "glue-max", 2000 + 5000)).allowed
    assert (await run(sidecar, "glue-max", 1)).reason == CAP

    account = await set_max_spend(sidecar, "glue-max", 140)
    assert [(p.pool_id, p.cap, p.unit) for p in account.pools] == [("overage", 140 * M, "usd")]
    assert (await run(sidecar, "glue-max", 2000)).allowed
    over = (await pools(sidecar, "glue-max"))["overage"]
    assert (over.spent, over.cap, over.balance) == (140 * M, 140 * M, 0)

    account = await set_max_spend(sidecar, "glue-max", 140)
    assert account.stopped_until_unix_ms == 0
    d = await run(sidecar, "glue-max", 1)
    assert (d.reason, d.retry_at_unix_ms) == (CAP, FEB_15)


async def test_lowering_max_spend_below_the_months_spend_stops_everything_until_renewal(
    sidecar: Sidecar,
) -> None:
    """Lowering the maximum below this month's spend stops all actions until the renewal.

    "If you reduce your maximum monthly spend to an amount lower than your current month's
    usage, all apps will stop running immediately and will resume after your monthly renewal."
    $40 spent, maximum lowered to $20: even an action the bought block still covers is refused
    (ACCOUNT_STOPPED, retry at the renewal); on the renewal everything runs again.
    """
    await open_account(sidecar, "glue-stop", "glue_starter")
    assert (await run(sidecar, "glue-stop", 2000 + 1500)).allowed
    over = (await pools(sidecar, "glue-stop"))["overage"]
    assert (over.spent, over.balance) == (40 * M, 500 * M)

    account = await set_max_spend(sidecar, "glue-stop", 20)
    assert account.stopped_until_unix_ms == FEB_15
    for action in ("glue.app_action", "glue.record_update", "glue.hosting"):
        d = await run(sidecar, "glue-stop", 1, action)
        assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, STOPPED, FEB_15)
    bal = await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="glue-stop"))
    assert bal.stopped_until_unix_ms == FEB_15
    assert {p.pool_id: p.balance for p in bal.pools} == {"base": 0, "overage": 500 * M}

    await clock_to(sidecar, "glue-stop", FEB_15 - 1)
    assert (await run(sidecar, "glue-stop", 1)).reason == STOPPED

    await clock_to(sidecar, "glue-stop", FEB_15)
    d = await run(sidecar, "glue-stop", 2000)
    assert (d.allowed, debits(d.debits)) == (True, [("base", 2000 * M)])
    account = await sidecar.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="glue-stop"))
    assert account.stopped_until_unix_ms == 0
    # The lowered maximum ($20) still holds in the new month: exactly one block.
    assert (await run(sidecar, "glue-stop", 1000)).allowed
    assert (await run(sidecar, "glue-stop", 1)).reason == CAP


# --- custom integration base hosting (a recurring charge) ------------------------------------


async def custom_integration(sc: Sidecar, account_id: str) -> None:
    flag = admin_pb2.Terms(flags=["custom_integration"])
    await sc.admin.SetTerms(admin_pb2.SetTermsRequest(account_id=account_id, terms=flag))


async def test_base_hosting_is_charged_at_each_renewal(sidecar: Sidecar) -> None:
    """Base hosting, "a standard recurring charge": 500 credits at each renewal.

    Only accounts with custom integrations pay it (the flag custom_integration): from the
    next renewal, out of the renewed credits, before anything else; then every renewal.
    """
    await open_account(sidecar, "glue-host", "glue_starter")
    await open_account(sidecar, "glue-plain", "glue_starter")
    await custom_integration(sidecar, "glue-host")
    assert (await pools(sidecar, "glue-host"))["base"].balance == 2000 * M  # this period: none
    assert (await run(sidecar, "glue-host", 1800)).allowed

    await clock_to(sidecar, "glue-host", FEB_15)
    await clock_to(sidecar, "glue-plain", FEB_15)
    assert (await pools(sidecar, "glue-host"))["base"].balance == 1500 * M
    assert (await pools(sidecar, "glue-plain"))["base"].balance == 2000 * M
    d = await run(sidecar, "glue-host", 1600)  # 1,500 left, then a 1,000-credit block at $20
    assert (d.allowed, debits(d.debits)) == (True, [("base", 1500 * M), ("overage", 100 * M)])

    await clock_to(sidecar, "glue-host", ms(2027, 3, 15))
    assert (await pools(sidecar, "glue-host"))["base"].balance == 1500 * M


async def test_unpaid_hosting_stops_every_app_until_paid(sidecar: Sidecar) -> None:
    """The free tier's 100 credits cannot pay 500: all apps stop until it is paid.

    At the renewal the charge finds 100 credits and no overage: every action is refused with
    ACCOUNT_STOPPED and no retry time (no renewal would pay it). Upgrading to a paid tier pays
    it at once from the new tier's credits of this period, and the apps run again.
    """
    await open_account(sidecar, "glue-free-host", "glue_free")
    await custom_integration(sidecar, "glue-free-host")
    assert (await run(sidecar, "glue-free-host", 1)).allowed

    await clock_to(sidecar, "glue-free-host", FEB_15)
    for action in ("glue.app_action", "glue.record_update"):
        d = await run(sidecar, "glue-free-host", 1, action)
        assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, STOPPED, 0)
        assert "recurring charge" in d.message
    assert (await pools(sidecar, "glue-free-host"))["base"].balance == 100 * M  # nothing taken
    request = admin_pb2.GetAccountRequest(account_id="glue-free-host")
    (hosting,) = (await sidecar.admin.GetAccount(request)).recurring
    assert (hosting.recurring_id, hosting.cost, hosting.meter) == (
        "base_hosting",
        500 * M,
        "glue_credit",
    )
    assert (hosting.next_due_unix_ms, hosting.unpaid) == (FEB_15, True)

    await sidecar.admin.UpdateAccount(
        admin_pb2.UpdateAccountRequest(account_id="glue-free-host", plan_id="glue_starter")
    )
    # glue_starter's 2,000 this period (less the 0 used since the renewal) pay the 500.
    assert (await pools(sidecar, "glue-free-host"))["base"].balance == 1500 * M
    assert (await run(sidecar, "glue-free-host", 1)).allowed
    bal = await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="glue-free-host"))
    assert [(r.next_due_unix_ms, r.unpaid) for r in bal.recurring] == [(ms(2027, 3, 15), False)]
