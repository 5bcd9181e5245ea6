"""The pool rules end to end through the Lua engine, one behaviour per test.

Accounts are moved to a fixed instant first (T0, noon UTC, far in the real clock's future), so
period boundaries fall where the test says, whenever it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from redis.crc import key_slot

from creditgate.domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from creditgate.domain.results import Reason

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis as AsyncRedis

    from creditgate.domain.results import AccountState
    from creditgate.engine import Engine

M = 1_000_000
DAY = 86_400_000
T0 = 4_076_827_200_000  # 2099-03-10T12:00:00Z
MIDNIGHT = T0 + DAY // 2  # 2099-03-11T00:00:00Z
CATALOG = """
meters: {credit: "test credits"}
actions:
  chat: {meter: credit, cost: 1}
plans:
  basic:
    order: [daily, bonus, wallet]
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 10, period: day}
      - {id: bonus, kind: grant, meter: credit}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.25"}}
  plus:
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 25, period: day}
      - {id: bonus, kind: grant, meter: credit}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.25"}}
  mini:
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 3, period: day}
  wide:
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 100, period: day}
  grants:
    pools:
      - {id: bonus, kind: grant, meter: credit}
  metered:
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 10, period: day}
      - {id: payg, kind: payg, unit: usd, rates: {credit: "0.10"}, cap: "100.00",
         cap_min: "10.00", period: cycle}
"""


@pytest.fixture
def engine(make_engine: Callable[[str], Engine]) -> Engine:
    return make_engine(CATALOG)


async def _open(
    engine: Engine,
    plan: str,
    acct: str = "acct-1",
    status: str = "active",
) -> AccountState:
    await engine.create_account(acct, plan, status=status)
    return await engine.advance_clock(acct, to_ms=T0)


async def _pools(engine: Engine, acct: str = "acct-1") -> dict[str, int]:
    return {p.pool_id: p.balance for p in (await engine.balance(acct)).pools}


async def _snapshot(redis: AsyncRedis) -> dict[bytes, object]:
    """Every key and its full value, to prove that nothing changed."""
    out: dict[bytes, object] = {}
    for key in sorted(await redis.keys("*")):
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = (kind, await redis.dump(key), await redis.pttl(key) > 0)
    return out


# --- periods and expiry --------------------------------------------------------------------


async def test_daily_allowance_resets_lazily_and_records_what_expired(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
    mark: Callable[..., Awaitable[str]],
) -> None:
    """Lazy reset: after idle days one 'expire' of the unused rest, then one 'reset' to full."""
    await _open(engine, "basic")
    await engine.consume("acct-1", "chat", 4, {}, "c1")
    since = await mark(engine, "acct-1")

    state = await engine.advance_clock("acct-1", seconds=3 * 86_400)

    daily = state.pools[0]
    assert (daily.balance, daily.next_reset) == (10 * M, MIDNIGHT + 3 * DAY)
    log = await events(engine, "acct-1", since)
    assert [e.kind for e in log] == ["clock", "expire", "reset"]
    expire, reset = log[1:]
    assert expire.moves == (("daily", str(-6 * M), "0"),)
    assert reset.moves == (("daily", str(10 * M), str(10 * M)),)
    assert expire.at == reset.at == T0 + 3 * DAY


async def test_grant_lots_are_spent_soonest_expiring_first_and_expire(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
    mark: Callable[..., Awaitable[str]],
) -> None:
    """Lots with the nearest expiry are used first, never-expiring last; expired lots vanish."""
    await _open(engine, "grants")
    await engine.grant("acct-1", "bonus", 5 * M, "late", expires_at=T0 + 10 * DAY)
    await engine.grant("acct-1", "bonus", 5 * M, "never")
    await engine.grant("acct-1", "bonus", 5 * M, "soon", expires_at=T0 + DAY)
    lots = (await engine.balance("acct-1")).pools[0].lots
    assert [lot.lot_id for lot in lots] == ["soon", "late", "never"]

    since = await mark(engine, "acct-1")
    d = await engine.consume("acct-1", "chat", 7, {}, "c1")
    assert d.allowed
    (charge,) = await events(engine, "acct-1", since)
    assert charge.moves == (
        ("bonus", str(-5 * M), str(8 * M), "soon"),
        ("bonus", str(-2 * M), str(8 * M), "late"),
    )

    since = await mark(engine, "acct-1")
    state = await engine.advance_clock("acct-1", to_ms=T0 + 10 * DAY)  # the instant 'late' ends
    bonus = state.pools[0]
    assert bonus.balance == 5 * M
    assert [(lot.lot_id, lot.balance) for lot in bonus.lots] == [("never", 5 * M)]
    expired = [e for e in await events(engine, "acct-1", since) if e.kind == "expire"]
    assert [e.moves for e in expired] == [(("bonus", str(-3 * M), str(5 * M), "late"),)]

    with pytest.raises(InvalidArgumentError, match=r"expires_at \S+Z is not in the future"):
        await engine.grant("acct-1", "bonus", M, "stale", expires_at=T0 + 10 * DAY)


async def test_expired_hold_returns_its_credits_without_any_call(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
    mark: Callable[..., Awaitable[str]],
) -> None:
    """A hold past its TTL gives its credits back at the next touch: 'hold_expired' is logged."""
    await _open(engine, "basic")
    hold = await engine.reserve("acct-1", "chat", 4, {}, "h1", ttl_seconds=60)
    assert (hold.allowed, hold.expires_at) == (True, T0 + 60_000)

    assert (await engine.advance_clock("acct-1", seconds=59)).pools[0].balance == 6 * M
    since = await mark(engine, "acct-1")
    state = await engine.advance_clock("acct-1", seconds=1)  # expires_at itself is past the TTL
    assert state.pools[0].balance == 10 * M

    (expired,) = [e for e in await events(engine, "acct-1", since) if e.kind == "hold_expired"]
    assert expired.request_id == "h1"
    assert expired.moves == (("daily", str(4 * M), str(10 * M)),)
    with pytest.raises(FailedPreconditionError, match="expired"):
        await engine.settle("acct-1", "h1", 4)
    release = await engine.release("acct-1", "h1")
    assert (release.released, release.returned, release.state) == (False, 0, "expired")
    assert (await _pools(engine))["daily"] == 10 * M


async def test_every_expired_hold_is_returned_at_the_next_touch(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
) -> None:
    """However many holds expired, the next balance and the next charge see all their credits."""
    await _open(engine, "wide")
    for i in range(100):
        assert (await engine.reserve("acct-1", "chat", 1, {}, f"h{i}", 60)).allowed
    state = await engine.advance_clock("acct-1", seconds=60)  # its answer is a balance() read

    assert state.pools[0].balance == 100 * M
    assert (await engine.consume("acct-1", "chat", 100, {}, "all")).allowed
    kinds = [e.kind for e in await events(engine, "acct-1")]
    assert kinds.count("hold_expired") == 100


# --- holds -----------------------------------------------------------------------------------


# (plan, held, actual, cost, shortfall, daily after); a shortfall means not fully charged
SETTLES = {
    "less": ("basic", 4, 1, 1 * M, 0, 9 * M),  # the rest of the hold goes back
    "equal": ("basic", 4, 4, 4 * M, 0, 6 * M),
    "more": ("basic", 4, 7, 7 * M, 0, 3 * M),  # the extra is charged
    "more-unaffordable": ("mini", 2, 5, 2 * M, 3 * M, 1 * M),  # only the hold is charged
}


@pytest.mark.parametrize("case", SETTLES.values(), ids=SETTLES.keys())
async def test_settle_charges_the_actual_quantity(
    engine: Engine, case: tuple[str, int, int, int, int, int]
) -> None:
    """Settle charges the real quantity; an unaffordable extra is all-or-nothing, reported."""
    plan, held, actual, cost, shortfall, daily_after = case
    fully = shortfall == 0
    await _open(engine, plan)
    await engine.reserve("acct-1", "chat", held, {}, "h1", 60)

    s = await engine.settle("acct-1", "h1", actual)

    assert (s.cost, s.held, s.fully_charged, s.shortfall) == (cost, held * M, fully, shortfall)
    assert s.reason == (Reason.ALLOWED if fully else Reason.INSUFFICIENT_CREDITS)
    assert bool(s.message) is not fully
    assert [(m.pool_id, m.amount) for m in s.debits] == [("daily", cost)]
    assert (await _pools(engine))["daily"] == daily_after
    again = await engine.settle("acct-1", "h1", actual)
    assert (again.replayed, again.cost, again.debits) == (True, s.cost, s.debits)
    assert (await _pools(engine))["daily"] == daily_after


async def test_release_twice_returns_the_hold_once(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
) -> None:
    """The second release is a no-op answer; a released hold cannot be settled."""
    await _open(engine, "basic")
    await engine.reserve("acct-1", "chat", 4, {}, "h1", 60)

    first = await engine.release("acct-1", "h1")
    second = await engine.release("acct-1", "h1")

    assert (first.released, first.returned, first.state) == (True, 4 * M, "released")
    assert (second.released, second.returned, second.state) == (False, 0, "released")
    assert (await _pools(engine))["daily"] == 10 * M
    assert [e.kind for e in await events(engine, "acct-1")].count("release") == 1
    with pytest.raises(FailedPreconditionError, match="was released"):
        await engine.settle("acct-1", "h1", 4)


# --- refunds and idempotency -----------------------------------------------------------------


async def test_refund_partial_then_full_then_over_refund(engine: Engine) -> None:
    """Refunds return newest debits first, never more than was charged."""
    await _open(engine, "basic")
    await engine.grant("acct-1", "wallet", M, "topup")
    charge = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert [(m.pool_id, m.amount) for m in charge.debits] == [
        ("daily", 10 * M),
        ("wallet", 500_000),
    ]

    part = await engine.refund("acct-1", "c1", "f1", 1)
    assert (part.refunded, part.refundable) == (1 * M, 11 * M)
    assert [(m.pool_id, m.amount) for m in part.returns] == [("wallet", -250_000)]

    rest = await engine.refund("acct-1", "c1", "f2")  # quantity 0: all that is left
    assert (rest.refunded, rest.refundable) == (11 * M, 0)
    assert await _pools(engine) == {"daily": 10 * M, "bonus": 0, "wallet": M}

    with pytest.raises(FailedPreconditionError, match="nothing is left to refund"):
        await engine.refund("acct-1", "c1", "f3", 1)
    replay = await engine.refund("acct-1", "c1", "f1", 1)
    assert (replay.replayed, replay.refunded) == (True, 1 * M)
    with pytest.raises(FailedPreconditionError, match="already used for a different refund"):
        await engine.refund("acct-1", "c1", "f1", 2)
    assert await _pools(engine) == {"daily": 10 * M, "bonus": 0, "wallet": M}


async def test_refund_of_a_denied_unknown_or_held_request_is_refused(engine: Engine) -> None:
    """Only recorded charges and settled holds can be refunded."""
    await _open(engine, "mini")
    denied = await engine.consume("acct-1", "chat", 5, {}, "big")
    assert not denied.allowed
    with pytest.raises(NotFoundError, match="no charge with request_id 'big'"):
        await engine.refund("acct-1", "big", "f1")
    with pytest.raises(NotFoundError, match="no charge with request_id 'nope'"):
        await engine.refund("acct-1", "nope", "f2")
    await engine.reserve("acct-1", "chat", 1, {}, "h1", 60)
    with pytest.raises(FailedPreconditionError, match="is not settled"):
        await engine.refund("acct-1", "h1", "f3")
    with pytest.raises(InvalidArgumentError, match="must differ"):
        await engine.refund("acct-1", "h1", "h1")


async def test_replay_answers_again_and_a_changed_request_is_refused(
    engine: Engine,
    events: Callable[..., Awaitable[list[Any]]],
) -> None:
    """Same id and request: the first answer, charged once. Same id, other request: refused."""
    await _open(engine, "basic")
    first = await engine.consume("acct-1", "chat", 3, {}, "c1")
    again = await engine.consume("acct-1", "chat", 3, {}, "c1")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.debits == first.debits
    assert (await _pools(engine))["daily"] == 7 * M
    assert [e.kind for e in await events(engine, "acct-1")].count("charge") == 1
    with pytest.raises(FailedPreconditionError, match="already used on this account"):
        await engine.consume("acct-1", "chat", 4, {}, "c1")
    with pytest.raises(FailedPreconditionError, match="already used on this account"):
        await engine.reserve("acct-1", "chat", 3, {}, "c1", 60)


async def test_a_denied_request_is_not_recorded_and_may_be_retried(engine: Engine) -> None:
    """Denials are not remembered: the same id passes once the account can pay."""
    await _open(engine, "basic")
    denied = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert (denied.allowed, denied.shortfall) == (False, 2 * M)
    await engine.grant("acct-1", "bonus", 2 * M, "g1")
    retried = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert (retried.allowed, retried.replayed) == (True, False)


async def test_dry_run_changes_nothing(engine: Engine, redis: AsyncRedis) -> None:
    """A dry run answers what would be taken and writes no key, event or record."""
    await _open(engine, "basic")
    await engine.grant("acct-1", "wallet", M, "topup")
    await engine.balance("acct-1")  # any due maintenance is done before the snapshot
    before = await _snapshot(redis)

    d = await engine.consume("acct-1", "chat", 12, {}, "c1", dry_run=True)
    no = await engine.consume("acct-1", "chat", 99, {}, "c2", dry_run=True)
    await engine.reserve("acct-1", "chat", 2, {}, "h1", 60, dry_run=True)

    assert (d.allowed, d.dry_run) == (True, True)
    assert [(m.pool_id, m.amount, m.remaining) for m in d.debits] == [
        ("daily", 10 * M, 0),
        ("wallet", 500_000, 500_000),
    ]
    assert not no.allowed
    assert await _snapshot(redis) == before
    real = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert (real.allowed, real.replayed) == (True, False)


# --- account status and plans -----------------------------------------------------------------


async def test_a_suspended_account_is_denied_until_reactivated(engine: Engine) -> None:
    """Suspension denies every charge and hold without touching the pools."""
    await _open(engine, "basic")
    await engine.update_account("acct-1", status="suspended")
    d = await engine.consume("acct-1", "chat", 1, {}, "c1")
    h = await engine.reserve("acct-1", "chat", 1, {}, "h1", 60)
    assert (d.allowed, d.reason, d.retry_at) == (False, Reason.ACCOUNT_SUSPENDED, 0)
    assert (h.allowed, h.reason) == (False, Reason.ACCOUNT_SUSPENDED)
    assert (await _pools(engine))["daily"] == 10 * M
    await engine.update_account("acct-1", status="active")
    assert (await engine.consume("acct-1", "chat", 1, {}, "c1")).allowed


async def test_trial_accounts_cannot_use_pay_as_you_go(engine: Engine) -> None:
    """In a trial the payg pool is locked: the allowance runs out into a plain denial."""
    await _open(engine, "metered", status="trial")
    d = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert (d.allowed, d.reason, d.shortfall) == (False, Reason.INSUFFICIENT_CREDITS, 2 * M)
    await engine.update_account("acct-1", status="active")
    d = await engine.consume("acct-1", "chat", 12, {}, "c1")
    assert [(m.pool_id, m.amount) for m in d.debits] == [("daily", 10 * M), ("payg", 200_000)]
    assert (await engine.balance("acct-1")).pools[1].spent == 200_000


async def test_plan_change_keeps_this_periods_usage(engine: Engine) -> None:
    """An allowance shared by both plans keeps what was used: new amount minus usage, >= 0."""
    await _open(engine, "basic")
    await engine.consume("acct-1", "chat", 4, {}, "c1")

    up = await engine.update_account("acct-1", plan_id="plus")
    assert (up.plan_id, up.pools[0].balance) == ("plus", 21 * M)
    down = await engine.update_account("acct-1", plan_id="mini")
    assert (down.plan_id, down.pools[0].balance) == ("mini", 0)
    tomorrow = await engine.advance_clock("acct-1", to_ms=MIDNIGHT)
    assert tomorrow.pools[0].balance == 3 * M  # the next period starts with the new amount


async def test_switching_plans_back_and_forth_mints_no_credits(engine: Engine) -> None:
    """Usage survives a round trip: basic -> mini -> basic the same day gives nothing back."""
    await _open(engine, "basic")
    assert (await engine.consume("acct-1", "chat", 4, {}, "c1")).allowed
    await engine.update_account("acct-1", plan_id="mini")  # 4 used > 3: clamped to 0
    back = await engine.update_account("acct-1", plan_id="basic")
    assert back.pools[0].balance == 6 * M  # still 4 of 10 used today
    assert (await engine.consume("acct-1", "chat", 6, {}, "c2")).allowed
    assert not (await engine.consume("acct-1", "chat", 1, {}, "c3")).allowed


# --- Redis Cluster ---------------------------------------------------------------------------


@pytest.mark.parametrize("acct", ["acct-1", "a:b:c", "user@example.com", "x/y+z=w", "Z.9_-:"])
async def test_every_key_of_an_account_is_in_one_slot(
    engine: Engine, redis: AsyncRedis, acct: str
) -> None:
    """Each key the engine creates or names for an account hashes to one cluster slot."""
    await _open(engine, "basic", acct)
    await engine.grant(acct, "bonus", 5 * M, "g:1", expires_at=T0 + DAY)
    await engine.consume(acct, "chat", 3, {}, "c/1")
    await engine.refund(acct, "c/1", "f@1", 1)
    await engine.reserve(acct, "chat", 1, {}, "h=1", 60)
    await engine.reserve(acct, "chat", 1, {}, "h+2", 60)
    await engine.settle(acct, "h=1", 1)

    named = [*engine.keys.account(acct), engine.keys.record(acct, "c/1")]
    stored = await redis.keys("*")
    assert len(stored) >= 7  # account, stream, holds, expiries and at least three records
    slots = {key_slot(k.encode()) for k in named} | {key_slot(k) for k in stored}
    assert slots == {key_slot(engine.keys.tag(acct).encode())}


@pytest.mark.parametrize("acct", ["{x}", "a}b", "a{b}", "x|y", "-lead", ""])
async def test_account_ids_that_could_break_the_hash_tag_are_refused(
    engine: Engine, acct: str
) -> None:
    """Braces (a hash tag of their own) and the record separator never reach a key name."""
    with pytest.raises(InvalidArgumentError, match="account_id"):
        await engine.create_account(acct, "basic")
