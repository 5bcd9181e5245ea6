"""Atomicity under load: 200 parallel requests from four sidecars on one account.

Each script runs atomically in Redis, so however the calls interleave exactly the affordable
ones pass, nothing is overspent, and what the callers were told was debited, what the pools lost
and what the event stream recorded are the same numbers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, TypeVar

import pytest
import pytest_asyncio

from cluster_kit import async_client
from creditgate.domain.results import Reason
from creditgate.engine import Engine

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from creditgate.domain.results import Movement, Settlement

_T = TypeVar("_T")
N = 200
SIDECARS = 4
M = 1_000_000
ACCT = "team-7"

# Every request costs 3 credits. daily 10 + bonus 12 pay for 7 requests and a third of the 8th;
# the wallet pays 0.74 for the rest of the 8th, then 1.11 per request (3 x 0.37) for 29 more,
# and keeps 1.10: too little for a 38th. So exactly K = 37 requests are affordable, and the
# charges span all three pools.
K = 37
WALLET = 740_000 + 29 * 1_110_000 + 1_100_000
CATALOG = """
meters: {credit: "test credits"}
actions:
  work: {meter: credit, cost: 1}
plans:
  mix:
    order: [daily, bonus, wallet]
    pools:
      - {id: daily, kind: allowance, meter: credit, amount: 10, period: day}
      - {id: bonus, kind: grant, meter: credit}
      - {id: wallet, kind: balance, unit: usd, rates: {credit: "0.37"}}
  capped:
    pools:
      - {id: base, kind: allowance, meter: credit, amount: 10, period: cycle}
      - {id: overage, kind: overage, meter: credit, block_size: 7, block_price: "2.50",
         cap: "21.00", period: cycle}
"""


@pytest_asyncio.fixture
async def engines(
    redis_url: str,
    make_engine: Callable[..., Engine],
) -> AsyncIterator[list[Engine]]:
    """Four engines, each with its own client and pool, like four sidecars on one Redis.

    ``make_engine`` brings the per-test ``redis`` fixture, so the database starts empty.
    """
    catalog = make_engine(CATALOG).catalog
    clients = [async_client(redis_url, max_connections=64) for _ in range(SIDECARS)]
    try:
        yield [Engine(c, catalog, test_clock=True) for c in clients]
    finally:
        for c in clients:
            await c.aclose()


async def _mix_account(engine: Engine) -> dict[str, int]:
    state = await engine.create_account(ACCT, "mix")
    soon = state.now + 30 * 86_400_000
    await engine.grant(ACCT, "bonus", 5 * M, "lot-soon", expires_at=soon)
    await engine.grant(ACCT, "bonus", 7 * M, "lot-never")
    await engine.grant(ACCT, "wallet", WALLET, "topup")
    return await _balances(engine)


async def _balances(engine: Engine) -> dict[str, int]:
    return {p.pool_id: p.balance for p in (await engine.balance(ACCT)).pools}


def _spread(
    engines: list[Engine],
    calls: Iterable[Callable[[Engine], Awaitable[_T]]],
) -> Awaitable[list[_T]]:
    """Run every call at once, dealt round-robin over the engines."""
    return asyncio.gather(*(call(engines[i % len(engines)]) for i, call in enumerate(calls)))


def _debited(movements: Iterable[Movement]) -> Counter[str]:
    out: Counter[str] = Counter()
    for m in movements:
        out[m.pool_id] += m.amount
    return out


def _spent(start: dict[str, int], end: dict[str, int]) -> Counter[str]:
    return Counter({pool: start[pool] - end[pool] for pool in start})


async def _reserve_all(engines: list[Engine]) -> list[str]:
    holds = await _spread(
        engines, (lambda e, i=i: e.reserve(ACCT, "work", 3, {}, f"h{i}", 600) for i in range(N))
    )
    return [h.request_id for h in holds if h.allowed]


async def test_parallel_consumes_allow_exactly_the_affordable_ones(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
) -> None:
    """200 parallel charges spanning allowance, grant and money: exactly K pass, sums agree."""
    start = await _mix_account(engines[0])
    decisions = await _spread(
        engines, (lambda e, i=i: e.consume(ACCT, "work", 3, {}, f"c{i}") for i in range(N))
    )
    end = await _balances(engines[0])

    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == K
    assert end == {"daily": 0, "bonus": 0, "wallet": 1_100_000}
    assert {d.reason for d in decisions if not d.allowed} == {Reason.INSUFFICIENT_CREDITS}
    assert all(sum(m.covered for m in d.debits) == 3 * M for d in allowed)
    debited = _debited(m for d in allowed for m in d.debits)
    assert debited == _spent(start, end)
    assert set(debited) == {"daily", "bonus", "wallet"}

    charges = [e for e in await events(engines[0], ACCT) if e.kind == "charge"]
    assert sorted(e.request_id for e in charges) == sorted(d.request_id for d in allowed)
    recorded: Counter[str] = Counter()
    for e in charges:
        recorded.update(e.net())
    assert {pool: -amount for pool, amount in recorded.items()} == debited


async def test_parallel_reserves_then_settles_never_overspend(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
) -> None:
    """K of 200 holds pass; settling less, equal and more at once keeps every sum exact."""
    start = await _mix_account(engines[0])
    held = await _reserve_all(engines)
    assert len(held) == K
    assert await _balances(engines[0]) == {"daily": 0, "bonus": 0, "wallet": 1_100_000}

    quantities = {rid: (1, 3, 5)[i % 3] for i, rid in enumerate(held)}
    settled = await _spread(
        engines, (lambda e, rid=rid: e.settle(ACCT, rid, quantities[rid]) for rid in held)
    )
    end = await _balances(engines[0])

    assert all(v >= 0 for v in end.values())
    assert end["daily"] <= 10 * M
    assert end["bonus"] <= 12 * M
    for s in settled:
        q = quantities[s.reservation_id]
        assert s.held == 3 * M
        if s.fully_charged:
            assert (s.cost, s.shortfall) == (q * M, 0)
        else:  # only a settle above the hold can fall short, and then it charges the hold
            assert (q, s.cost, s.shortfall) == (5, 3 * M, 2 * M)
        assert sum(m.covered for m in s.debits) == s.cost
    assert _debited(m for s in settled for m in s.debits) == _spent(start, end)

    log = [e for e in await events(engines[0], ACCT) if e.kind in ("hold", "settle")]
    assert Counter(e.kind for e in log) == {"hold": K, "settle": K}
    recorded: Counter[str] = Counter()
    for e in log:
        recorded.update(e.net())
    assert {p: recorded[p] for p in start} == {p: end[p] - start[p] for p in start}


async def test_interleaved_reserve_and_settle_keeps_the_ledger_exact(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
) -> None:
    """Each of 200 tasks reserves then settles at once; pools, answers and stream agree."""
    start = await _mix_account(engines[0])

    async def reserve_then_settle(engine: Engine, i: int) -> Settlement | None:
        hold = await engine.reserve(ACCT, "work", 3, {}, f"h{i}", 600)
        if not hold.allowed:
            return None
        return await engine.settle(ACCT, hold.request_id, (1, 2, 3, 4)[i % 4])

    results = await _spread(engines, (lambda e, i=i: reserve_then_settle(e, i) for i in range(N)))
    settled = [s for s in results if s is not None]
    end = await _balances(engines[0])

    assert len(settled) >= K  # settling below the hold frees credits for later holds
    assert all(v >= 0 for v in end.values())
    assert all(s.fully_charged or s.shortfall == 1 * M for s in settled)
    assert all(sum(m.covered for m in s.debits) == s.cost for s in settled)
    assert _debited(m for s in settled for m in s.debits) == _spent(start, end)
    log = await events(engines[0], ACCT)
    kinds = Counter(e.kind for e in log)
    assert kinds["hold"] == kinds["settle"] == len(settled)
    recorded: Counter[str] = Counter()
    for e in log:
        if e.kind in ("hold", "settle"):
            recorded.update(e.net())
    assert {p: recorded[p] for p in start} == {p: end[p] - start[p] for p in start}


async def test_parallel_releases_return_everything_exactly_once(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
) -> None:
    """Releasing each of K holds twice at once frees each once; then exactly K fit again."""
    start = await _mix_account(engines[0])
    held = await _reserve_all(engines)
    assert len(held) == K

    released = await _spread(
        engines, (lambda e, rid=rid: e.release(ACCT, rid) for rid in held + held)
    )
    assert Counter(r.released for r in released) == {True: K, False: K}
    assert sum(r.returned for r in released) == K * 3 * M
    assert await _balances(engines[0]) == start

    log = await events(engines[0], ACCT)
    assert Counter(e.kind for e in log if e.kind in ("hold", "release")) == {
        "hold": K,
        "release": K,
    }

    again = await _spread(
        engines, (lambda e, i=i: e.consume(ACCT, "work", 3, {}, f"again{i}") for i in range(N))
    )
    assert sum(d.allowed for d in again) == K


async def test_parallel_overage_blocks_never_pass_the_spend_cap(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
) -> None:
    """Blocks of 7 credits at 2.50 under a 21.00 cap: at most 8 blocks, 16 requests of 4."""
    await engines[0].create_account(ACCT, "capped")
    decisions = await _spread(
        engines, (lambda e, i=i: e.consume(ACCT, "work", 4, {}, f"o{i}") for i in range(N))
    )
    state = await engines[0].balance(ACCT)
    base, overage = state.pools

    assert sum(d.allowed for d in decisions) == 16  # (10 + 8 x 7) // 4
    assert {d.reason for d in decisions if not d.allowed} == {Reason.SPEND_CAP_REACHED}
    assert (base.balance, overage.balance) == (0, 2 * M)
    assert overage.spent == 20 * M
    assert overage.spent <= overage.cap == 21 * M
    blocks = [e for e in await events(engines[0], ACCT) if e.kind == "overage_block"]
    assert sum(int(e.fields["blocks"]) for e in blocks) == 8
    assert sum(int(e.fields["price"]) for e in blocks) == 20 * M


@pytest.mark.parametrize("reserve", [False, True], ids=["consume", "reserve"])
async def test_parallel_duplicates_of_one_request_id_charge_once(
    engines: list[Engine],
    events: Callable[..., Awaitable[list]],
    *,
    reserve: bool,
) -> None:
    """200 identical requests with one request_id at once: one charge, 199 replays."""
    start = await _mix_account(engines[0])

    def call(e: Engine) -> Awaitable:
        if reserve:
            return e.reserve(ACCT, "work", 3, {}, "same-id", 600)
        return e.consume(ACCT, "work", 3, {}, "same-id")

    decisions = await _spread(engines, [call] * N)
    assert all(d.allowed for d in decisions)
    assert Counter(d.replayed for d in decisions) == {False: 1, True: N - 1}
    assert {d.debits for d in decisions} == {decisions[0].debits}
    end = await _balances(engines[0])
    assert end == {**start, "daily": 7 * M}
    kind = "hold" if reserve else "charge"
    assert [e.request_id for e in await events(engines[0], ACCT) if e.kind == kind] == ["same-id"]
