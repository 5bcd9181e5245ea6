"""consume.lua's first branch writes exactly what the general consume path writes.

Both end in charge.lua's one charge(); the first branch runs it before the prelude when nothing
is due, the general path (consume_general.lua) after bringing what is due up to date. The
random operation sequences of test_properties go to two engines on one Redis, each in its own
key space: one whose consume script starts with the first branch (the default), and one
without it (``lua_fast_path=False``), where lib.lua + consume_general.lua answer everything.
After every step both must have answered alike and hold the same Redis state: account
hashes, holds, hold expiries, idempotency records (decoded, with their TTLs) and the events the
step appended (decoded, snapshots included), key names compared without their key space's tag.

Which path answered is read from redis-server's own command counts: the fast path reads the
account hash once and answers; when it declines, the general path reads the hash again. The
fixed cases at the end pin down when the fast path answers and when it must decline.
"""

from __future__ import annotations

import contextlib
import dataclasses
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from test_properties import (
    ACCOUNTS,
    ATTRIBUTES,
    CATALOGS,
    STARTS,
    Op,
    Pair,
    _ops,
    _plain,
    _runner_for,
    sequences,
)

from creditgate.domain.catalog import CatalogConfig, compile_catalog
from creditgate.domain.errors import CreditgateError
from creditgate.domain.results import Decision, Reason
from creditgate.engine import Engine, KeySpace
from creditgate.engine.scripts import HEAD
from creditgate.testing import ReferenceModel

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis as AsyncRedis

EXAMPLES = 60
FAST, GENERAL = KeySpace("fast", 1), KeySpace("general", 1)


def _unpack(raw: bytes) -> Any:  # noqa: ANN401 - msgpack output
    return msgpack.unpackb(raw, raw=True, strict_map_key=False)


def _plain_keys(value: Any, tag: bytes) -> Any:  # noqa: ANN401 - nested msgpack/redis data
    """``value`` with the key space's tag replaced, however deep (record keys in snapshots)."""
    if isinstance(value, bytes):
        return value.replace(tag, b"{K}")
    if isinstance(value, dict):
        return {_plain_keys(k, tag): _plain_keys(v, tag) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_keys(v, tag) for v in value]
    return value


def _alike(value: object) -> object:
    """An answer without its message, and without the account's creation instant.

    The two engines created their accounts some milliseconds apart.
    """
    value = _plain(value)
    if (
        dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and hasattr(value, "created")
    ):
        value = dataclasses.replace(value, created=0)  # type: ignore[arg-type]
    return value


async def _state(redis: AsyncRedis, keys: KeySpace) -> dict[bytes, Any]:
    """Every key of the key space but its stream, decoded where the scripts pack values."""
    tag = keys.tag("any").encode()
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=tag + b":*", count=1000):
        if key == keys.stream(0).encode():
            continue
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            value: Any = await redis.hgetall(key)
            if b":h:" in key:  # holds: packed
                value = {k: _unpack(v) for k, v in value.items()}
            else:  # the two accounts were created some milliseconds apart
                value.pop(b"created", None)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        else:  # an idempotency record: packed, with a TTL
            value = (_unpack(await redis.get(key)), await redis.pttl(key) > 0)
        out[key.replace(tag, b"{K}")] = _plain_keys(value, tag)
    return out


async def _events(redis: AsyncRedis, keys: KeySpace, after: bytes) -> list[dict[bytes, Any]]:
    """The events appended after stream id ``after``, snapshots decoded, ids left out."""
    tag = keys.tag("any").encode()
    entries = await redis.xrange(keys.stream(0), min=b"(" + after if after else "-")
    return [
        _plain_keys({k: _snapshot(v) if k == b"st" else v for k, v in fields.items()}, tag)
        for _, fields in entries
    ]


def _snapshot(raw: bytes) -> Any:  # noqa: ANN401 - msgpack output
    """A state snapshot with the holds and records it carries decoded too.

    Lua packs a table's keys in its own hash order, which depends on how the table was built,
    so packed maps are compared decoded.
    """
    snap = _unpack(raw)
    holds, records = snap.get(b"h") or {}, snap.get(b"r") or {}
    snap[b"h"] = {k: v and _unpack(v) for k, v in holds.items()}
    snap[b"r"] = {k: [_unpack(v[0]), v[1]] for k, v in records.items()}
    return snap


async def _last_id(redis: AsyncRedis, keys: KeySpace) -> bytes:
    last = await redis.xrevrange(keys.stream(0), count=1)
    return last[0][0] if last else b""


# consume.lua's first branch (after core.lua and charge.lua) with its writes turned into
# no-ops: it returns the first branch's answer, or FELL_THROUGH where the general path would
# take over. It reads what the first branch reads and changes nothing, so it can tell
# beforehand which path a charge will take. (Counting commands cannot: the general path reuses
# the first branch's reads.)
_PROBE = "\n".join(
    [
        HEAD,
        "local real = redis",
        "local redis = {call = function(cmd, ...)",
        "  if cmd == 'SET' or cmd == 'HSET' or cmd == 'XADD' or cmd == 'ZADD' then",
        "    return false",
        "  end",
        "  return real.call(cmd, ...)",
        "end}",
        *(
            (files("creditgate.engine") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
            for name in ("core", "charge", "consume")
        ),
        "return {'FELL_THROUGH'}",
    ]
)


async def _fast_answers(  # noqa: PLR0913, PLR0917 - consume's arguments
    engine: Engine,
    account_id: str,
    action: str,
    quantity: int,
    attributes: dict[str, str],
    request_id: str = "",
) -> bool:
    """Whether the fast path would answer this CheckAndConsume (without running it)."""
    try:
        call = engine.quota.prepare(
            account_id, action, quantity, attributes, request_id, dry_run=False, hold_ttl_ms=None
        )
    except CreditgateError:
        return False
    if isinstance(call, Decision):
        return False
    keys = call.keys()
    plan_id = await engine.redis.hget(keys[0], "plan")
    plan = engine.catalog.plan(plan_id.decode()) if plan_id else None
    if plan is None:
        return False
    reply = await engine.redis.eval(_PROBE, len(keys), *keys, *call.argv(plan))
    return reply != [b"FELL_THROUGH"]


class Twins(Pair):
    """test_properties' Pair, with a second engine whose consume has no fast path.

    The model still resolves each op's arguments (pools, clock marks); the comparison here is
    between the two engines.
    """

    def __init__(
        self,
        engines: tuple[Engine, Engine],
        model: ReferenceModel,
        run: Callable[..., Any],
        accounts: list[str],
    ) -> None:
        super().__init__(engines[0], model, run, accounts)
        self.general = engines[1]

    def twice(self, name: str, *args: object, **kwargs: object) -> tuple[object, object]:
        """``name`` on both engines (and the model, to keep it in step)."""
        results: list[object] = []
        for engine in (self.engine, self.general):
            try:
                results.append(_alike(self.run(getattr(engine, name)(*args, **kwargs))))
            except CreditgateError as exc:
                results.append(type(exc))
        with contextlib.suppress(CreditgateError):
            getattr(self.model, name)(*args, **kwargs)
        return results[0], results[1]

    def step(self, i: int, op: Op) -> None:
        name, args, kwargs = self.call_of(op)
        redis = self.engine.redis
        before = self.run(_last_id(redis, FAST)), self.run(_last_id(redis, GENERAL))
        if name == "consume" and not kwargs.get("dry_run"):
            hit = self.run(_fast_answers(self.engine, *args))  # type: ignore[arg-type]
            event(f"consume {'fast' if hit else 'general'}")
        fast, general = self.twice(name, *args, **kwargs)
        where = f"step {i}: {name}{args} {kwargs}"
        assert fast == general, f"{where}: answers differ"
        assert self.run(_events(redis, FAST, before[0])) == self.run(
            _events(redis, GENERAL, before[1])
        ), f"{where}: events differ"
        assert self.run(_state(redis, FAST)) == self.run(_state(redis, GENERAL)), (
            f"{where}: Redis state differs"
        )


SMALL = compile_catalog(
    CatalogConfig.model_validate(
        yaml.safe_load(
            """
meters: {tok: tokens}
actions:
  t.use: {meter: tok, cost: 1}
plans:
  p:
    order: [daily, bonus, base, over]
    pools:
      - {id: daily, kind: allowance, meter: tok, amount: 5, period: day}
      - {id: bonus, kind: grant, meter: tok}
      - {id: base, kind: allowance, meter: tok, amount: 100, period: month}
      - {id: over, kind: overage, meter: tok, block_size: 10, block_price: 1, cap: 5,
         cap_min: 0, period: month}
"""
        )
    )
)
MICRO = 1_000_000
NOW = STARTS[3]


def _small_ops() -> st.SearchStrategy[Op]:
    """Sequences on SMALL that mostly charge: the fast path's own ground."""
    rid = st.sampled_from([f"q{i}" for i in range(12)])
    consume = st.builds(
        lambda *x: Op("consume", 0, x),
        st.just("t.use"),
        st.integers(1, 40),
        st.just({}),
        rid,
        st.just(False),  # noqa: FBT003 - dry_run
    )
    return st.one_of(
        consume,
        consume,
        consume,
        consume,
        st.builds(
            lambda *x: Op("grant", 0, x),
            st.just(1),
            st.integers(1, 50).map(lambda n: n * MICRO),
            st.sampled_from(["g0", "g1"]),
            st.sampled_from([None, 3_600_000]),
        ),
        st.builds(
            lambda *x: Op("reserve", 0, x),
            st.just("t.use"),
            st.integers(1, 20),
            st.just({}),
            rid,
            st.sampled_from([1, 60]),
            st.just(False),  # noqa: FBT003 - dry_run
        ),
        st.builds(
            lambda *x: Op("settle", 0, x),
            rid,
            st.tuples(st.sampled_from(["eq", "less"]), st.integers(1, 5)),
        ),
        st.builds(
            lambda *x: Op("advance", 0, x),
            st.sampled_from([("seconds", 30), ("seconds", 3600), ("seconds", 86_400)]),
        ),
    )


def _run(redis_url: str, catalog_name: str, data: st.DataObject) -> None:
    if catalog_name == "small":
        catalog, setup = SMALL, [(ACCOUNTS[0], "p", 1, "active")]
        ops = data.draw(st.lists(_small_ops(), min_size=10, max_size=40), label="ops")
    else:
        catalog = CATALOGS[catalog_name]
        plans = sorted(catalog.plans)
        setup = [
            (
                ACCOUNTS[i],
                data.draw(st.sampled_from(plans)),
                data.draw(st.sampled_from([1, 15, 31])),
                data.draw(st.sampled_from(["active", "active", "trial", "suspended"])),
            )
            for i in range(data.draw(st.integers(1, 2), label="accounts"))
        ]
        ops = data.draw(
            st.lists(_ops(catalog, ATTRIBUTES[catalog_name]), min_size=10, max_size=40),
            label="ops",
        )
    start = data.draw(st.sampled_from(STARTS), label="start")
    runner, client = _runner_for(redis_url)
    try:
        runner.run(client.flushdb())
        engines = (
            Engine(client, catalog, keys=FAST, test_clock=True),
            Engine(client, catalog, keys=GENERAL, test_clock=True, lua_fast_path=False),
        )
        twins = Twins(engines, ReferenceModel(catalog), runner.run, [a for a, *_ in setup])
        for account, plan, anchor, status in setup:
            created = [runner.run(e.create_account(account, plan, anchor, status)) for e in engines]
            twins.model.create_account(account, plan, created[0].created, anchor, status)
            twins.twice("advance_clock", account, to_ms=start)
        for i, op in enumerate(ops):
            twins.step(i, op)
    finally:
        runner.run(client.aclose())
        runner.close()


@pytest.mark.parametrize("catalog_name", ["demo", "test", "small"])
@sequences(EXAMPLES)
@given(data=st.data())
def test_fast_path_writes_what_the_general_path_writes(
    redis_url: str, catalog_name: str, data: st.DataObject
) -> None:
    """Same answers, same Redis state, same events, with and without the fast path."""
    _run(redis_url, catalog_name, data)


# --- when the fast path answers ------------------------------------------------------------


async def _consume(engine: Engine, quantity: int, rid: str) -> tuple[bool, Decision]:
    """A charge of ``quantity`` tokens; whether the fast path answered it, and how."""
    fast = await _fast_answers(engine, "a", "t.use", quantity, {}, rid)
    return fast, await engine.consume("a", "t.use", quantity, {}, rid)


async def _time_passes(redis: AsyncRedis, engine: Engine, ms: int) -> None:
    """The account's frozen clock moves with no script run, as real time moves between calls.

    (advance_clock would run the account script, which brings everything due up to date.)
    """
    await redis.hset(engine.keys.account("a")[0], "clk", NOW + ms)


@pytest.fixture
async def small(redis: AsyncRedis) -> Engine:
    """An account on SMALL at a fixed instant whose periods have started."""
    engine = Engine(redis, SMALL, test_clock=True)
    await engine.create_account("a", "p", 1)
    await engine.advance_clock("a", to_ms=NOW)
    await engine.consume("a", "t.use", 1, {}, "warm")
    return engine


async def test_a_charge_covered_by_allowances_and_grants_is_fast(small: Engine) -> None:
    await small.grant("a", "bonus", 10 * MICRO, "g1")
    fast, decision = await _consume(small, 20, "r1")  # daily 4, bonus 10, base 6
    assert fast
    assert decision.allowed
    assert [(m.pool_id, m.amount) for m in decision.debits] == [
        ("daily", 4 * MICRO),
        ("bonus", 10 * MICRO),
        ("base", 6 * MICRO),
    ]


async def test_a_charge_that_buys_an_overage_block_is_answered_first(small: Engine) -> None:
    """Every pool kind is charge.lua's walk: an overage block is bought in the first branch."""
    fast, decision = await _consume(small, 110, "r1")  # daily 4, base 100, then a block of 10
    assert fast
    assert decision.allowed
    assert [m.pool_id for m in decision.debits] == ["daily", "base", "over"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("replay", Reason.ALLOWED),  # a repeated request id is answered from its record
        ("reset_due", Reason.ALLOWED),  # a period has ended: resets are the general path's
        ("lot_expired", Reason.ALLOWED),  # a grant lot has expired
        ("hold_due", Reason.ALLOWED),  # a hold has expired
        ("denied", Reason.SPEND_CAP_REACHED),  # every denial
        ("stopped", Reason.ACCOUNT_STOPPED),  # a cap lowered below this month's spend
    ],
)
async def test_the_fast_path_declines(
    redis: AsyncRedis, small: Engine, case: str, reason: Reason
) -> None:
    """Each of these falls through to the general path, which answers it."""
    quantity, rid = 1, "r2"
    if case == "replay":
        rid = "warm"
    elif case == "reset_due":
        await _time_passes(redis, small, 86_400_000)
    elif case == "lot_expired":
        await small.grant("a", "bonus", MICRO, "g2", NOW + 1000)
        await _time_passes(redis, small, 2000)
    elif case == "hold_due":
        await small.reserve("a", "t.use", 1, {}, "h1", 1)
        await _time_passes(redis, small, 2000)
    elif case == "overage":
        quantity = 110  # daily 4, base 100, then a block of 10
    elif case == "denied":
        quantity = 10**6
    elif case == "stopped":
        await small.consume("a", "t.use", 110, {}, "big")  # spends 1 USD on a block
        await small.set_pool_settings("a", "over", cap=0)
    fast, decision = await _consume(small, quantity, rid)
    assert not fast
    assert decision.reason is reason
