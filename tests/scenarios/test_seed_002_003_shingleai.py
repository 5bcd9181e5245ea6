"""Seeds 002 and 003, ShingleAI credits, end to end over gRPC.

Both seeds are captures of the same help page of one product:
../shared/seeds/002_3640eceb37fe3f77.txt and ../shared/seeds/003_49f719ff386cb259.txt.

Plans ``shingle_free`` and ``shingle_pro`` of examples/demo.yaml. Rules exercised:

- every consumable draws on its monthly allowance first, then on the USD credit balance at the
  tier's overage rate (exact micro-USD; a balance too small for a whole unit pays for nothing);
- purchased credits (a Grant to the balance pool ``credits``) land at once, never expire and
  roll over month to month; they cannot be given an expiry;
- with the allowance exhausted and the balance depleted, requests fail (INSUFFICIENT) until
  the billing cycle renews (retry_at), credits are bought, or the plan is upgraded; Free
  accounts can buy credits and keep working;
- LLM usage runs as Reserve (estimated tokens) -> Settle (actual tokens, fewer or more) or
  Release; an expired hold gives its credits back;
- a Refund of a charge returns its money to the balance (newest debit first).

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

M = 1_000_000  # micro-units per unit of a meter, or per USD
USD = M
ALLOWED = quota_pb2.REASON_ALLOWED
INSUFFICIENT = quota_pb2.REASON_INSUFFICIENT_CREDITS


T0 = ms(2027, 1, 15, 12)
FEB_15 = ms(2027, 2, 15)


async def open_account(sc: Sidecar, account_id: str, plan: str) -> None:
    await sc.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=account_id, plan_id=plan, anchor_day=15)
    )
    await clock_to(sc, account_id, T0)


async def buy(sc: Sidecar, account_id: str, micro_usd: int, grant_id: str) -> int:
    """A one-time credit purchase; returns the balance after it."""
    g = await sc.admin.Grant(
        admin_pb2.GrantRequest(
            account_id=account_id,
            pool_id="credits",
            amount=micro_usd,
            grant_id=grant_id,
            note="purchase",
        )
    )
    assert g.unit == "usd"
    return g.balance


async def use(
    sc: Sidecar, account_id: str, action: str, quantity: int, request_id: str = ""
) -> quota_pb2.Decision:
    return await sc.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(
            account_id=account_id, action=action, quantity=quantity, request_id=request_id
        )
    )


async def left(sc: Sidecar, account_id: str) -> dict[str, int]:
    """Each pool's balance: meter micro-units for allowances, micro-USD for ``credits``."""
    bal = await sc.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=account_id))
    return {p.pool_id: p.balance for p in bal.pools}


# --- allowance first, then the credit balance ----------------------------------------------------


async def test_allowance_first_then_credits_at_the_tiers_rate(sidecar: Sidecar) -> None:
    """Usage beyond the monthly allowance bills against the USD balance at the tier's rate.

    "Credits are a USD balance on your account that ShingleAI draws from when usage exceeds your
    monthly plan allowance. Every consumable ... bills against credits at the per-tier overage
    rate." Pro: 5,000,000 tokens a month, then $0.00001 a token. A 1,532-token call with 1,000
    tokens of allowance left takes those 1,000 and 532 x 10 micro-USD = $0.00532 of credits.
    """
    await open_account(sidecar, "sh-pro", "shingle_pro")
    assert await buy(sidecar, "sh-pro", 10 * USD, "buy-1") == 10 * USD
    d = await use(sidecar, "sh-pro", "shingle.llm", 4_999_000)
    assert debits(d.debits) == [("tokens", 4_999_000 * M)]

    d = await use(sidecar, "sh-pro", "shingle.llm", 1_532)
    assert (d.allowed, d.cost, d.meter) == (True, 1_532 * M, "llm_token")
    assert debits(d.debits) == [("tokens", 1_000 * M), ("credits", 5_320)]
    assert [(x.unit, x.covered, x.remaining) for x in d.debits] == [
        ("llm_token", 1_000 * M, 0),
        ("usd", 532 * M, 10 * USD - 5_320),
    ]
    assert (await left(sidecar, "sh-pro"))["credits"] == 9_994_680


async def test_each_consumable_has_its_own_allowance_and_rate(sidecar: Sidecar) -> None:
    """Allowances are per consumable; the balance pays each consumable at its own rate.

    "Every consumable — LLM tokens, API calls, MCP calls, storage, email sends, SMS, and voice
    minutes — bills against credits at the per-tier overage rate." On Free, emails past the 100
    included go to credits at $0.01 while the API allowance stays untouched; Free has no MCP
    or SMS allowance, so those bill credits from the first call ($0.002 and $0.05).
    """
    await open_account(sidecar, "sh-free", "shingle_free")
    await buy(sidecar, "sh-free", 5 * USD, "buy-1")
    assert (await use(sidecar, "sh-free", "shingle.email", 100)).allowed
    d = await use(sidecar, "sh-free", "shingle.email", 3)
    assert debits(d.debits) == [("credits", 30_000)]
    d = await use(sidecar, "sh-free", "shingle.mcp", 7)
    assert debits(d.debits) == [("credits", 14_000)]
    d = await use(sidecar, "sh-free", "shingle.sms", 2)
    assert debits(d.debits) == [("credits", 100_000)]
    d = await use(sidecar, "sh-free", "shingle.voice", 3)
    assert debits(d.debits) == [("credits", 300_000)]
    assert await left(sidecar, "sh-free") == {
        "tokens": 100_000 * M,
        "api": 1_000 * M,
        "email": 0,
        "credits": 5 * USD - 30_000 - 14_000 - 100_000 - 300_000,
    }


async def test_a_balance_smaller_than_one_unit_pays_for_nothing(sidecar: Sidecar) -> None:
    """Money is never rounded in the customer's favour: 15 micro-USD do not buy a 20-micro token.

    The balance is drawn "at the per-tier overage rate" ($0.00002 a token on Free). With 15
    micro-USD left the request is refused whole; the shortfall says the balance covers 0.75 of
    the token (rounded down), and nothing is taken.
    """
    await open_account(sidecar, "sh-tiny", "shingle_free")
    await buy(sidecar, "sh-tiny", 15, "buy-1")
    assert (await use(sidecar, "sh-tiny", "shingle.llm", 100_000)).allowed
    d = await use(sidecar, "sh-tiny", "shingle.llm", 1)
    assert (d.allowed, d.reason, d.shortfall, list(d.debits)) == (False, INSUFFICIENT, 250_000, [])
    assert (await left(sidecar, "sh-tiny"))["credits"] == 15
    await buy(sidecar, "sh-tiny", 5, "buy-2")
    d = await use(sidecar, "sh-tiny", "shingle.llm", 1)
    assert (d.allowed, debits(d.debits)) == (True, [("credits", 20)])
    assert (await left(sidecar, "sh-tiny"))["credits"] == 0


# --- purchased credits ---------------------------------------------------------------------------


async def test_purchased_credits_roll_over_and_never_expire(sidecar: Sidecar) -> None:
    """Purchased credits survive every renewal; only the allowance refills.

    "Credits do not expire and roll over month to month." $25 bought, $5 spent on API calls
    past Pro's 100,000: after the Feb 15 renewal the API allowance is whole again and $20 are
    still there, and still there a year of renewals later.
    """
    await open_account(sidecar, "sh-roll", "shingle_pro")
    await buy(sidecar, "sh-roll", 25 * USD, "buy-1")
    assert (await use(sidecar, "sh-roll", "shingle.api", 105_000)).allowed
    assert await left(sidecar, "sh-roll") == {
        "tokens": 5_000_000 * M,
        "api": 0,
        "mcp": 50_000 * M,
        "email": 5_000 * M,
        "sms": 500 * M,
        "voice": 300 * M,
        "credits": 20 * USD,
    }

    await clock_to(sidecar, "sh-roll", FEB_15)
    assert (await left(sidecar, "sh-roll"))["api"] == 100_000 * M
    assert (await left(sidecar, "sh-roll"))["credits"] == 20 * USD

    await clock_to(sidecar, "sh-roll", ms(2028, 2, 15, 12))
    bal = await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="sh-roll"))
    pool = next(p for p in bal.pools if p.pool_id == "credits")
    assert (pool.kind, pool.unit, pool.balance, pool.period) == ("balance", "usd", 20 * USD, "")
    assert pool.next_reset_unix_ms == 0


async def test_purchased_credits_cannot_be_given_an_expiry(sidecar: Sidecar) -> None:
    """A purchase with an expiry date is refused: "Credits do not expire"."""
    await open_account(sidecar, "sh-exp", "shingle_pro")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.admin.Grant(
            admin_pb2.GrantRequest(
                account_id="sh-exp",
                pool_id="credits",
                amount=10 * USD,
                grant_id="buy-1",
                expires_at_unix_ms=ms(2027, 3, 1),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await left(sidecar, "sh-exp"))["credits"] == 0


# --- running out ---------------------------------------------------------------------------------


async def test_free_account_out_of_allowance_and_credits_can_buy_and_keep_working(
    sidecar: Sidecar,
) -> None:
    """Allowance and balance both empty: denied until renewal, or until credits are bought.

    "When your monthly allowance is exhausted and your credit balance is depleted ... New
    requests fail until you top up credits, your billing cycle resets, or you upgrade. Free
    tier. Same behavior — Free accounts can purchase credits to keep working past the included
    allowance." "Credits land in your account immediately on successful payment."
    """
    await open_account(sidecar, "sh-out", "shingle_free")
    assert (await use(sidecar, "sh-out", "shingle.api", 1_000)).allowed
    d = await use(sidecar, "sh-out", "shingle.api", 1)
    assert (d.allowed, d.reason, d.shortfall) == (False, INSUFFICIENT, 1 * M)
    assert d.retry_at_unix_ms == FEB_15  # the allowance refills at the cycle's renewal

    assert await buy(sidecar, "sh-out", 5 * USD, "buy-1") == 5 * USD
    d = await use(sidecar, "sh-out", "shingle.api", 1)
    assert (d.allowed, debits(d.debits)) == (True, [("credits", 2_000)])
    assert (await left(sidecar, "sh-out"))["credits"] == 4_998_000

    await clock_to(sidecar, "sh-out", FEB_15)
    d = await use(sidecar, "sh-out", "shingle.api", 1)
    assert debits(d.debits) == [("api", 1 * M)]


async def test_a_consumable_without_allowance_waits_for_a_top_up_not_a_renewal(
    sidecar: Sidecar,
) -> None:
    """With no allowance for a consumable, an empty balance is not cured by the renewal.

    Free has no MCP allowance: an MCP call with no credits is refused with retry_at 0 (it only
    clears with a top-up or an upgrade), unlike consumables whose allowance refills.
    """
    await open_account(sidecar, "sh-mcp", "shingle_free")
    d = await use(sidecar, "sh-mcp", "shingle.mcp", 1)
    assert (d.allowed, d.reason, d.retry_at_unix_ms) == (False, INSUFFICIENT, 0)


async def test_upgrading_restores_service_and_keeps_this_cycles_usage(sidecar: Sidecar) -> None:
    """An upgrade restores a blocked consumable with the bigger allowance, less what was used.

    "New requests fail until you top up credits, your billing cycle resets, or you upgrade."
    Free's 100 emails used, no credits: refused; on Pro, 5,000 - 100 emails are left this cycle.
    """
    await open_account(sidecar, "sh-up", "shingle_free")
    assert (await use(sidecar, "sh-up", "shingle.email", 100)).allowed
    assert not (await use(sidecar, "sh-up", "shingle.email", 1)).allowed
    await sidecar.admin.UpdateAccount(
        admin_pb2.UpdateAccountRequest(account_id="sh-up", plan_id="shingle_pro")
    )
    d = await use(sidecar, "sh-up", "shingle.email", 1)
    assert (d.allowed, debits(d.debits)) == (True, [("email", 1 * M)])
    assert (await left(sidecar, "sh-up"))["email"] == 4_899 * M


# --- LLM: Reserve, Settle, Release ---------------------------------------------------------------


async def test_llm_reserve_then_settle_fewer_tokens_gives_the_rest_back(sidecar: Sidecar) -> None:
    """An LLM call holds its estimate, then is charged for the tokens it really used.

    "LLM tokens (agent chat)" bill like every consumable: allowance, then credits. Free, $1 of
    credits: a 120,000-token estimate holds the 100,000 included tokens and 20,000 x 20
    micro-USD; settling 110,000 tokens returns 10,000 tokens' worth ($0.20) to the balance.
    """
    await open_account(sidecar, "sh-llm", "shingle_free")
    await buy(sidecar, "sh-llm", 1 * USD, "buy-1")
    hold = await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-llm", action="shingle.llm", quantity=120_000, reservation_id="chat-1"
        )
    )
    assert (hold.allowed, hold.cost) == (True, 120_000 * M)
    assert debits(hold.debits) == [("tokens", 100_000 * M), ("credits", 400_000)]
    assert hold.expires_at_unix_ms == T0 + 300_000  # the server's default hold TTL
    assert await left(sidecar, "sh-llm") == {
        "tokens": 0,
        "api": 1_000 * M,
        "email": 100 * M,
        "credits": 600_000,
    }

    s = await sidecar.quota.Settle(
        quota_pb2.SettleRequest(account_id="sh-llm", reservation_id="chat-1", quantity=110_000)
    )
    assert (s.cost, s.held, s.fully_charged, s.shortfall) == (110_000 * M, 120_000 * M, True, 0)
    assert debits(s.debits) == [("tokens", 100_000 * M), ("credits", 200_000)]
    assert (await left(sidecar, "sh-llm"))["credits"] == 800_000


async def test_llm_settle_more_tokens_charges_the_extra(sidecar: Sidecar) -> None:
    """More tokens than estimated: the extra is charged from the balance, all or nothing.

    A 1,000-token hold settled at 1,500 tokens costs 1,500 x 20 micro-USD = $0.03. A later
    1,000-token hold settled at 100,000 tokens cannot afford the extra $1.98: the held part is
    charged, the rest is reported as shortfall, and the balance is not overdrawn.
    """
    await open_account(sidecar, "sh-more", "shingle_free")
    await buy(sidecar, "sh-more", 1 * USD, "buy-1")
    assert (await use(sidecar, "sh-more", "shingle.llm", 100_000)).allowed
    await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-more", action="shingle.llm", quantity=1_000, reservation_id="chat-2"
        )
    )
    assert (await left(sidecar, "sh-more"))["credits"] == 980_000
    s = await sidecar.quota.Settle(
        quota_pb2.SettleRequest(account_id="sh-more", reservation_id="chat-2", quantity=1_500)
    )
    assert (s.cost, s.held, s.fully_charged) == (1_500 * M, 1_000 * M, True)
    assert debits(s.debits) == [("credits", 30_000)]
    assert (await left(sidecar, "sh-more"))["credits"] == 970_000

    await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-more", action="shingle.llm", quantity=1_000, reservation_id="chat-3"
        )
    )
    s = await sidecar.quota.Settle(
        quota_pb2.SettleRequest(account_id="sh-more", reservation_id="chat-3", quantity=100_000)
    )
    assert (s.fully_charged, s.reason, s.shortfall) == (False, INSUFFICIENT, 99_000 * M)
    assert (s.cost, debits(s.debits)) == (1_000 * M, [("credits", 20_000)])
    assert (await left(sidecar, "sh-more"))["credits"] == 950_000


async def test_llm_release_and_expired_hold_give_everything_back(sidecar: Sidecar) -> None:
    """A released or expired hold returns all its tokens and money.

    A cancelled chat (Release) returns its 5,000-token hold; releasing again returns nothing.
    A 60-second hold left alone returns its credits once the account's clock passes 61 s.
    """
    await open_account(sidecar, "sh-rel", "shingle_pro")
    await buy(sidecar, "sh-rel", 1 * USD, "buy-1")
    assert (await use(sidecar, "sh-rel", "shingle.llm", 4_998_000)).allowed
    before = await left(sidecar, "sh-rel")
    hold = await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-rel", action="shingle.llm", quantity=5_000, reservation_id="chat-4"
        )
    )
    assert debits(hold.debits) == [("tokens", 2_000 * M), ("credits", 30_000)]
    r = await sidecar.quota.Release(
        quota_pb2.ReleaseRequest(account_id="sh-rel", reservation_id="chat-4")
    )
    assert (r.released, r.returned) == (True, 5_000 * M)
    assert sorted(debits(r.returns)) == [("credits", -30_000), ("tokens", -2_000 * M)]
    assert await left(sidecar, "sh-rel") == before
    again = await sidecar.quota.Release(
        quota_pb2.ReleaseRequest(account_id="sh-rel", reservation_id="chat-4")
    )
    assert (again.released, again.returned) == (False, 0)

    await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-rel",
            action="shingle.llm",
            quantity=5_000,
            reservation_id="chat-5",
            ttl_seconds=60,
        )
    )
    assert (await left(sidecar, "sh-rel"))["credits"] == 970_000
    await sidecar.admin.AdvanceTestClock(
        admin_pb2.AdvanceTestClockRequest(account_id="sh-rel", seconds=61)
    )
    assert await left(sidecar, "sh-rel") == before


async def test_llm_chat_is_blocked_when_out_of_tokens_and_credits(sidecar: Sidecar) -> None:
    """Agent conversations are blocked when tokens and credits are both gone.

    "LLM tokens (agent chat). Agent conversations are blocked. The chat shows an Out of Credits
    card with a button to purchase more." The Reserve is refused until the cycle renews or
    credits are bought.
    """
    await open_account(sidecar, "sh-block", "shingle_free")
    assert (await use(sidecar, "sh-block", "shingle.llm", 100_000)).allowed
    hold = await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-block", action="shingle.llm", quantity=500, reservation_id="chat-6"
        )
    )
    assert (hold.allowed, hold.reason, hold.shortfall) == (False, INSUFFICIENT, 500 * M)
    assert hold.retry_at_unix_ms == FEB_15
    assert hold.message
    await buy(sidecar, "sh-block", 5 * USD, "buy-1")
    hold = await sidecar.quota.Reserve(
        quota_pb2.ReserveRequest(
            account_id="sh-block", action="shingle.llm", quantity=500, reservation_id="chat-6"
        )
    )
    assert (hold.allowed, debits(hold.debits)) == (True, [("credits", 10_000)])


# --- refunds -------------------------------------------------------------------------------------


async def test_refund_returns_money_to_the_balance_newest_debit_first(sidecar: Sidecar) -> None:
    """A refunded charge gives its money back to the credit balance, newest debit first.

    "Recent Transactions: 5 most recent credit movements (purchase, auto top-up, consumption,
    refund)". Pro, 4,998 emails used: 4 emails take the last 2 included ones and $0.01 of
    credits. Refunding 1 email returns $0.005 (the credits part goes back first); refunding the
    rest returns the other $0.005 and the 2 included emails.
    """
    await open_account(sidecar, "sh-ref", "shingle_pro")
    await buy(sidecar, "sh-ref", 10 * USD, "buy-1")
    assert (await use(sidecar, "sh-ref", "shingle.email", 4_998)).allowed
    d = await use(sidecar, "sh-ref", "shingle.email", 4, request_id="mail-42")
    assert debits(d.debits) == [("email", 2 * M), ("credits", 10_000)]
    assert (await left(sidecar, "sh-ref"))["credits"] == 9_990_000

    r = await sidecar.quota.Refund(
        quota_pb2.RefundRequest(
            account_id="sh-ref", request_id="mail-42", refund_id="mail-42-r1", quantity=1
        )
    )
    assert (r.refunded, r.refundable, r.meter) == (1 * M, 3 * M, "email")
    assert debits(r.returns) == [("credits", -5_000)]
    assert (await left(sidecar, "sh-ref"))["credits"] == 9_995_000

    r = await sidecar.quota.Refund(
        quota_pb2.RefundRequest(account_id="sh-ref", request_id="mail-42", refund_id="mail-42-r2")
    )
    assert (r.refunded, r.refundable) == (3 * M, 0)
    assert debits(r.returns) == [("credits", -5_000), ("email", -2 * M)]
    assert await left(sidecar, "sh-ref") == {
        "tokens": 5_000_000 * M,
        "api": 100_000 * M,
        "mcp": 50_000 * M,
        "email": 2 * M,
        "sms": 500 * M,
        "voice": 300 * M,
        "credits": 10 * USD,
    }


async def test_refund_after_the_renewal_still_returns_the_money(sidecar: Sidecar) -> None:
    """Money refunded after a renewal goes back to the balance; spent allowance stays spent.

    "Credits do not expire and roll over month to month": a charge from January refunded in
    February returns its $0.01 of credits, while its 2 included January emails are not added to
    February's fresh allowance (they expired with January's).
    """
    await open_account(sidecar, "sh-late", "shingle_pro")
    await buy(sidecar, "sh-late", 10 * USD, "buy-1")
    assert (await use(sidecar, "sh-late", "shingle.email", 4_998)).allowed
    assert (await use(sidecar, "sh-late", "shingle.email", 4, request_id="mail-7")).allowed
    await clock_to(sidecar, "sh-late", FEB_15)
    r = await sidecar.quota.Refund(
        quota_pb2.RefundRequest(account_id="sh-late", request_id="mail-7", refund_id="mail-7-r")
    )
    assert (r.refunded, r.refundable) == (4 * M, 0)
    assert await left(sidecar, "sh-late") == {
        "tokens": 5_000_000 * M,
        "api": 100_000 * M,
        "mcp": 50_000 * M,
        "email": 5_000 * M,
        "sms": 500 * M,
        "voice": 300 * M,
        "credits": 10 * USD,
    }
