"""Combined charges (consume_batch.lua) write exactly what one consume call each would write.

The pipelined connection sends charges of one account and request shape that queue up together
as one consume_batch call (driver/wire.py). Random runs of charges go through
``consume_many`` (one write, so they are combined) on an engine with a FastRedis, and one by
one through an engine without the fast path (lib.lua + consume.lua answer everything), each in
its own key space on one Redis. Answers, Redis state and events must be the same, including
when consume_batch stops part-way (a repeated request id, a depleted pool, an overage block to
buy) and the rest are sent as single consume calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from test_first_branch import MICRO, NOW, SMALL, _alike, _events, _last_id, _state
from test_properties import _runner_for, sequences

from creditgate.domain.errors import CreditgateError, UnavailableError
from creditgate.domain.results import Decision
from creditgate.driver.pipelined import FastRedis
from creditgate.driver.wire import MAX_COMBINED
from creditgate.engine import Engine, KeySpace
from creditgate.testing.faults import keep_busy

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

EXAMPLES = 40
COMBINED, GENERAL = KeySpace("comb", 1), KeySpace("general", 1)
Charge = tuple[int, str]  # quantity, request id


async def _setup(engine: Engine, bonus: int) -> None:
    await engine.create_account("a", "p", 1)
    await engine.advance_clock("a", to_ms=NOW)
    if bonus:
        await engine.grant("a", "bonus", bonus * MICRO, "g1")


async def _consume_or_error(engine: Engine, quantity: int, rid: str) -> object:
    try:
        return await engine.consume("a", "t.use", quantity, {}, rid)
    except CreditgateError as exc:
        return exc


def _outcome(answer: object) -> object:
    """A decision as test_first_branch compares them; an error as its type (a reused id)."""
    return type(answer) if isinstance(answer, CreditgateError) else _alike(answer)


async def _compare(
    client: AsyncRedis, redis_url: str, bonus: int, rounds: list[list[Charge]]
) -> int:
    """Run ``rounds`` on both engines, comparing after each; how many charges went combined."""
    fast = FastRedis(redis_url)
    try:
        await client.flushdb()
        combined = Engine(client, SMALL, keys=COMBINED, test_clock=True, fast=fast)
        general = Engine(client, SMALL, keys=GENERAL, test_clock=True, lua_fast_path=False)
        for engine in (combined, general):
            await _setup(engine, bonus)
        await combined.consume("a", "t.use", 1, {}, "warm")  # the sidecar learns the plan
        await general.consume("a", "t.use", 1, {}, "warm")
        for i, charges in enumerate(rounds):
            before = await _last_id(client, COMBINED), await _last_id(client, GENERAL)
            got = await combined.consume_many([("a", "t.use", q, {}, r, False) for q, r in charges])
            want = [await _consume_or_error(general, q, r) for q, r in charges]
            where = f"round {i}: {charges}"
            assert [_outcome(d) for d in got] == [_outcome(d) for d in want], f"{where}: answers"
            assert await _events(client, COMBINED, before[0]) == await _events(
                client, GENERAL, before[1]
            ), f"{where}: events differ"
            assert await _state(client, COMBINED) == await _state(client, GENERAL), (
                f"{where}: Redis state differs"
            )
        return fast.combined
    finally:
        await fast.aclose()


_charge = st.tuples(
    st.sampled_from([1, 1, 2, 7, 30]), st.sampled_from([f"q{i}" for i in range(16)])
)


@sequences(EXAMPLES)
@given(
    bonus=st.sampled_from([0, 30]),
    rounds=st.lists(st.lists(_charge, min_size=2, max_size=40), min_size=1, max_size=4),
)
def test_combined_charges_write_what_single_calls_write(
    redis_url: str, bonus: int, rounds: list[list[Charge]]
) -> None:
    """Same answers, state and events as one general consume call per charge, in order."""
    runner, client = _runner_for(redis_url)
    try:
        combined = runner.run(_compare(client, redis_url, bonus, rounds))
    finally:
        runner.run(client.aclose())
        runner.close()
    event("combined" if combined else "nothing combined")


async def test_charges_queued_together_are_combined(redis: AsyncRedis, redis_url: str) -> None:
    """Concurrent charges on one account go out combined; each is answered and charged once."""
    fast = FastRedis(redis_url)
    try:
        engine = Engine(redis, SMALL, test_clock=True, fast=fast)
        n = 3 * MAX_COMBINED + 5  # several combined calls, one after the other
        await _setup(engine, n)  # a bonus grant that covers them all
        await engine.consume("a", "t.use", 1, {}, "warm")
        events = (await redis.info("commandstats"))["cmdstat_xadd"]["calls"]
        answers = await engine.consume_many(
            [("a", "t.use", 1, {}, f"r{i}", False) for i in range(n)]
        )
        assert all(isinstance(d, Decision) and d.allowed for d in answers)
        assert fast.combined == n
        stats = await redis.info("commandstats")
        assert stats["cmdstat_xadd"]["calls"] - events == n  # one event per charge
        state = await engine.balance("a")
        left = {p.pool_id: p.balance for p in state.pools}
        assert left["daily"] + left["bonus"] + left["base"] == (5 + n + 100 - 1 - n) * MICRO
    finally:
        await fast.aclose()


async def test_combined_charges_survive_a_script_flush(redis: AsyncRedis, redis_url: str) -> None:
    """After SCRIPT FLUSH (a Redis restart) the combined call is reloaded and answers again."""
    fast = FastRedis(redis_url)
    try:
        engine = Engine(redis, SMALL, test_clock=True, fast=fast)
        await _setup(engine, 0)
        await engine.consume("a", "t.use", 1, {}, "warm")
        await redis.script_flush()
        first = await engine.consume_many([("a", "t.use", 1, {}, f"r{i}", False) for i in range(4)])
        assert all(isinstance(d, Decision) and d.allowed for d in first)
        # NOSCRIPT: the four were sent again one by one, after consume_batch was loaded.
        sha = engine.scripts.consume_batch.sha
        assert await redis.script_exists(sha) == [True]
        calls = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
        again = await engine.consume_many([("a", "t.use", 1, {}, f"s{i}", False) for i in range(4)])
        assert all(isinstance(d, Decision) and d.allowed for d in again)
        assert (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"] == calls + 1
    finally:
        await fast.aclose()


@pytest.mark.parametrize("combine", [True, False])
async def test_only_charges_are_combined(
    redis: AsyncRedis,
    redis_url: str,
    combine: bool,  # noqa: FBT001 - a parameter
) -> None:
    """Reservations and dry runs go one call each; charges only when combining is on."""
    fast = FastRedis(redis_url)
    try:
        engine = Engine(redis, SMALL, test_clock=True, fast=fast, combine=combine)
        await _setup(engine, 0)
        await engine.consume("a", "t.use", 1, {}, "warm")
        dry = await engine.consume_many([("a", "t.use", 1, {}, f"d{i}", True) for i in range(4)])
        held = await asyncio.gather(
            *(engine.reserve("a", "t.use", 1, {}, f"h{i}", 60) for i in range(4))
        )
        assert all(isinstance(d, Decision) and d.allowed for d in [*dry, *held])
        assert fast.combined == 0
        charged = await asyncio.gather(
            *(engine.consume("a", "t.use", 1, {}, f"r{i}") for i in range(5))
        )
        assert all(d.allowed for d in charged)
        # The first is written at once; the four that queued behind it go out combined.
        assert fast.combined == (4 if combine else 0)
    finally:
        await fast.aclose()


async def test_a_stuck_redis_fails_combined_charges_and_a_retry_charges_once(
    redis: AsyncRedis, redis_url: str
) -> None:
    """Combined charges behind a Redis stuck in a long script fail UNAVAILABLE, not hang.

    Whether Redis ran them after all is unknown to the caller; retrying with the same request
    ids charges each exactly once.
    """
    fast = FastRedis(redis_url, timeout=0.3)
    try:
        engine = Engine(redis, SMALL, test_clock=True, fast=fast)
        await _setup(engine, 0)
        await engine.consume("a", "t.use", 1, {}, "warm")
        blocker = asyncio.create_task(keep_busy(redis, 1.0))
        await asyncio.sleep(0.05)
        charges = [("a", "t.use", 1, {}, f"r{i}", False) for i in range(6)]
        with pytest.raises(UnavailableError):
            await engine.consume_many(charges)  # written at once, as one combined call
        assert fast.combined == len(charges)
        await blocker
        retried = await engine.consume_many(charges)
        assert all(isinstance(d, Decision) and d.allowed for d in retried)
        state = await engine.balance("a")
        left = {p.pool_id: p.balance for p in state.pools}
        assert left["daily"] + left["base"] == (5 + 100 - 1 - len(charges)) * MICRO
    finally:
        await fast.aclose()


async def test_an_accounts_commands_wait_for_its_combined_call(
    redis: AsyncRedis, redis_url: str
) -> None:
    """A combined call that stops part-way: the account's later charges run after the rest.

    Another account's charges in the same write go ahead; each account's charges still run in
    the order they were sent.
    """
    fast = FastRedis(redis_url)
    try:
        engine = Engine(redis, SMALL, test_clock=True, fast=fast)
        for account in ("a", "b"):
            await engine.create_account(account, "p", 1)
            await engine.advance_clock(account, to_ms=NOW)
            await engine.consume(account, "t.use", 1, {}, "warm")
        sent = [
            ("a", "r0"),
            ("a", "r0"),  # a replay: consume_batch stops here, the rest of the run goes alone
            ("a", "r1"),
            ("b", "s0"),  # another account: combined in the same write
            ("b", "s1"),
            ("a", "r2"),  # waits for a's combined call
            ("a", "r3"),
        ]
        answers = await engine.consume_many([(a, "t.use", 1, {}, r, False) for a, r in sent])
        assert [(d.request_id, d.replayed) for d in answers] == [  # type: ignore[union-attr]
            ("r0", False),
            ("r0", True),
            ("r1", False),
            ("s0", False),
            ("s1", False),
            ("r2", False),
            ("r3", False),
        ]
        assert fast.combined == 7  # a: r0 r0 r1, then b: s0 s1, then a: r2 r3
        entries = await redis.xrange(engine.keys.stream(engine.keys.shard_of("a")))
        charged = [f[b"r"].decode() for _, f in entries if f[b"a"] == b"a" and f[b"k"] == b"charge"]
        assert charged == ["warm", "r0", "r1", "r2", "r3"]
    finally:
        await fast.aclose()
