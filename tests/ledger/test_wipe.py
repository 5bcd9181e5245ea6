"""Redis wiped: every admin RPC and demo provisioning act on the ledger's state, never afresh.

Each case builds state, lets the worker apply it to the ledger, wipes Redis (FLUSHDB and SCRIPT
FLUSH, as an empty restart) and makes one call through a real gRPC server. The same call is made
on a twin: a second Redis holding a copy of the state as it was before the wipe. The wiped side
must answer as the twin did and end with the same keys, old request ids must replay without
charging, and once the worker caught up Redis and the ledger must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio
import yaml
from redis.asyncio import Redis as AsyncRedis

from conftest import CATALOG, Ledger, Workload, assert_consistent, catalog, make_worker
from creditgate.domain.catalog import Catalog, CatalogConfig, compile_catalog
from creditgate.domain.terms import Terms
from creditgate.domain.topup import AutoTopUp
from creditgate.engine import Engine
from creditgate.ledger.hydrate import install_hydration
from creditgate.ledger.reconcile import Reconciler
from creditgate.v1 import admin_pb2, admin_pb2_grpc, quota_pb2, quota_pb2_grpc
from creditgate.wiring.demo import provision
from creditgate.wiring.embedded.redis import EmbeddedRedis
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from creditgate.engine.keys import KeySpace

MICRO = 1_000_000
# (account, request id, action, quantity) of charges made before the wipe.
Charge = tuple[str, str, str, int]


@dataclass
class Side:
    """An engine on one Redis, served by a real grpc.aio server."""

    engine: Engine
    admin: admin_pb2_grpc.AdminServiceStub
    quota: quota_pb2_grpc.QuotaServiceStub
    charges: list[Charge] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[Side]:
    server, _, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Side(
            engine,
            admin_pb2_grpc.AdminServiceStub(channel),
            quota_pb2_grpc.QuotaServiceStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture(scope="module")
def twin_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture
async def twin(twin_url: str) -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(twin_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def copy_keys(source: AsyncRedis, target: AsyncRedis) -> None:
    """Every key but the event streams (the twin's events go nowhere), with its expiry."""
    async for key in source.scan_iter(count=1000):
        if await source.type(key) == b"stream":
            continue
        dumped = await source.dump(key)
        ttl = await source.pttl(key)
        await target.restore(key, max(ttl, 0), dumped, replace=True)


async def keyspace(redis: AsyncRedis, *, skip: tuple[str, ...] = ()) -> dict[bytes, Any]:
    """Every account key's value (not its expiry); streams left out."""
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        if any(s in key.decode() for s in skip) or kind == b"stream":
            continue
        if kind == b"hash":
            out[key] = await redis.hgetall(key)
        elif kind == b"zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = await redis.get(key)
    return out


async def wipe(redis: AsyncRedis) -> None:
    """What an empty restart leaves: no keys, no streams, no consumer group, no scripts."""
    await redis.flushdb()
    await redis.script_flush()


# --- the state before the wipe ------------------------------------------------------------


async def accounts_with_history(engine: Engine) -> list[Charge]:
    """An active account with charges, a grant, a cap and a hold; a suspended one at 0."""
    await engine.create_account("w", "capped")
    await engine.grant("w", "bonus", 30 * MICRO, "g-old", note="before the wipe")
    await engine.set_pool_settings("w", "payg", cap=10 * MICRO)
    charges = [("w", f"c-old-{i}", "use", 30) for i in range(5)]
    for account, rid, action, quantity in charges:
        assert (await engine.consume(account, action, quantity, {}, rid)).allowed
    assert (await engine.reserve("w", "use", 5, {}, "h-old", 600)).allowed
    await engine.create_account("s", "mixed")
    charges.append(("s", "c-old-s", "big", 40))
    assert (await engine.consume("s", "big", 40, {}, "c-old-s")).allowed  # all 200 credits
    await engine.update_account("s", status="suspended")
    return charges


async def paused_auto_topup(engine: Engine) -> list[Charge]:
    """Auto top-up on, a crossing, its payment declined: paused until a purchase."""
    await engine.create_account("m", "mixed")
    await engine.grant("m", "wallet", 20 * MICRO, "g-w")
    await engine.set_auto_topup("m", "wallet", AutoTopUp(5 * MICRO, 10 * MICRO, 30 * MICRO))
    charges = [("m", "c-base", "use", 200), ("m", "c-wallet", "use", 1600)]  # $20 -> $4
    for account, rid, action, quantity in charges:
        assert (await engine.consume(account, action, quantity, {}, rid)).allowed
    tid = (await engine.auto_topup("m", "wallet")).state.topup_id
    assert await engine.topup_paused("m", "wallet", tid, f"failed:{tid}")
    return charges


async def accounts_with_terms(engine: Engine) -> list[Charge]:
    """Those of accounts_with_history; one created with terms, one given terms mid-period."""
    charges = await accounts_with_history(engine)
    terms = Terms(
        seats=3,
        rates={"payg": {"credit": 50_000}},
        caps={"payg": (2 * MICRO, 50 * MICRO)},
        flags=("friend",),
    )
    await engine.create_account("t", "capped", terms=terms)
    charges.append(("t", "c-old-t", "big", 250))  # 250 of 300 (3 seats) at the friend price
    assert (await engine.consume("t", "big", 250, {}, "c-old-t")).allowed
    await engine.set_terms("w", Terms(seats=2, prices={"use": 2 * MICRO}))
    charges.append(("w", "c-old-w", "use", 10))
    assert (await engine.consume("w", "use", 10, {}, "c-old-w")).allowed
    return charges


async def accounts_with_fees(engine: Engine) -> list[Charge]:
    """Recurring charges paid ("h"), and one the pools could not pay: "u" stopped until paid.

    Hosting (60 credits a day) is more than the day's 50; support (30 a cycle) is not.
    """
    await engine.create_account("h", "hosted")  # hosting unpaid, support paid: 20 left
    await engine.grant("h", "wallet", 2 * MICRO, "g-h")  # pays hosting: 20 + $0.40
    charges = [("h", "c-old-h", "use", 5)]
    assert (await engine.consume("h", "use", 5, {}, "c-old-h")).allowed
    await engine.advance_clock("h", seconds=86_400)  # the next day's hosting, due
    await engine.create_account("u", "hosted")
    assert not (await engine.consume("u", "use", 1, {}, "c-stopped")).allowed
    return charges


async def fees(side: Side) -> list[Any]:
    """Balances (the fees due are charged once), a stopped account, the grant that pays."""
    money = admin_pb2.GrantRequest(account_id="u", pool_id="wallet", amount=MICRO, grant_id="g-u")

    def use(rid: str) -> quota_pb2.CheckAndConsumeRequest:
        return quota_pb2.CheckAndConsumeRequest(
            account_id="u", action="use", quantity=1, request_id=rid
        )

    return [
        await outcome(side.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="h"))),
        await outcome(side.quota.CheckAndConsume(use("c-new-1"))),
        await outcome(side.admin.Grant(money)),
        await outcome(side.quota.CheckAndConsume(use("c-new-2"))),
        await outcome(side.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="u"))),
    ]


# The demo accounts of the plans demo_accounts leaves out, created by the call on both sides.
NEW_DEMO = ("demo-blocks", "demo-hosted")


def _catalog_without(*plans: str) -> Catalog:
    config = yaml.safe_load(CATALOG)
    for plan in plans:
        del config["plans"][plan]
    return compile_catalog(CatalogConfig.model_validate(config))


async def demo_accounts(engine: Engine) -> list[Charge]:
    """Demo accounts of two plans, provisioned and used; the other plans' exist nowhere."""
    earlier = Engine(engine.redis, _catalog_without("blocks", "hosted"), keys=engine.keys,
                     test_clock=True)  # fmt: skip
    assert await provision(earlier) == ["demo-mixed", "demo-capped"]
    charges = [(a, f"d-{a}-{i}", "big", 8) for a in ("demo-mixed", "demo-capped") for i in range(4)]
    for account, rid, action, quantity in charges:
        assert (await engine.consume(account, action, quantity, {}, rid)).allowed
    return charges


# --- the calls ------------------------------------------------------------------------------


async def outcome(call: Awaitable[Any]) -> Any:  # noqa: ANN401 - a response message or a status
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def create(side: Side) -> list[Any]:
    return [
        await outcome(side.admin.CreateAccount(admin_pb2.CreateAccountRequest(**kw)))
        for kw in (
            {"account_id": "w", "plan_id": "capped"},
            {"account_id": "s", "plan_id": "blocks"},
        )
    ]


async def update(side: Side) -> list[Any]:
    trial = admin_pb2.ACCOUNT_STATUS_TRIAL
    request = admin_pb2.UpdateAccountRequest(account_id="w", status=trial, anchor_day=9)
    return [await outcome(side.admin.UpdateAccount(request))]


async def get(side: Side) -> list[Any]:
    return [
        await outcome(side.admin.GetAccount(admin_pb2.GetAccountRequest(account_id=a)))
        for a in ("w", "s")
    ]


async def grant(side: Side) -> list[Any]:
    request = admin_pb2.GrantRequest(
        account_id="w", pool_id="bonus", amount=7 * MICRO, grant_id="g-new", note="after"
    )
    return [await outcome(side.admin.Grant(request))]


async def settings(side: Side) -> list[Any]:
    request = admin_pb2.SetPoolSettingsRequest(account_id="w", pool_id="payg", cap=20 * MICRO)
    return [await outcome(side.admin.SetPoolSettings(request))]


async def clock(side: Side) -> list[Any]:
    request = admin_pb2.AdvanceTestClockRequest(account_id="w", seconds=86_400)
    return [await outcome(side.admin.AdvanceTestClock(request))]


async def autotopup(side: Side) -> list[Any]:
    get = admin_pb2.GetAutoTopUpRequest(account_id="m")
    change = admin_pb2.SetAutoTopUpRequest(account_id="m", threshold=6 * MICRO)
    return [
        await outcome(side.admin.GetAutoTopUp(get)),
        await outcome(side.admin.SetAutoTopUp(change)),
    ]


async def set_terms(side: Side) -> list[Any]:
    fewer = admin_pb2.SetTermsRequest(account_id="t", terms=admin_pb2.Terms(seats=2))
    more = admin_pb2.SetTermsRequest(
        account_id="w", terms=admin_pb2.Terms(seats=4, flags=["friend"])
    )
    return [
        await outcome(side.admin.SetTerms(fewer)),
        await outcome(side.admin.SetTerms(more)),
        *await get(side),
        await outcome(side.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="t"))),
        await outcome(side.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id="t"))),
    ]


async def demo(side: Side) -> list[Any]:
    return [await provision(side.engine)]


Build = Callable[[Engine], Awaitable[list[Charge]]]
CASES: dict[str, tuple[Build, Callable[[Side], Awaitable[list[Any]]]]] = {
    "CreateAccount": (accounts_with_history, create),
    "UpdateAccount": (accounts_with_history, update),
    "GetAccount": (accounts_with_history, get),
    "Grant": (accounts_with_history, grant),
    "SetPoolSettings": (accounts_with_history, settings),
    "AdvanceTestClock": (accounts_with_history, clock),
    "AutoTopUp": (paused_auto_topup, autotopup),
    "demo": (demo_accounts, demo),
    "SetTerms": (accounts_with_terms, set_terms),
    "GetAccount with terms": (accounts_with_terms, get),
    "recurring charges": (accounts_with_fees, fees),
}


async def replays_without_charging(side: Side, charges: list[Charge]) -> None:
    """Each old request id answers replayed=true and leaves every balance as it was."""
    for account, rid, action, quantity in charges:
        request = quota_pb2.GetBalanceRequest(account_id=account)
        before = await side.quota.GetBalance(request)
        again = await side.quota.CheckAndConsume(
            quota_pb2.CheckAndConsumeRequest(
                account_id=account, action=action, quantity=quantity, request_id=rid
            )
        )
        assert again.replayed, (account, rid, again)
        assert await side.quota.GetBalance(request) == before, (account, rid)


@pytest.mark.parametrize("case", CASES)
async def test_call_after_redis_wiped_acts_on_the_ledgers_state(
    case: str,
    ledger: Ledger,
    engine: Engine,
    keys: KeySpace,
    twin: AsyncRedis,
) -> None:
    """The wiped Redis answers as an intact one would; old ids replay; the ledger agrees."""
    build, call = CASES[case]
    install_hydration(engine, ledger.store)
    charges = await build(engine)
    await make_worker(engine.redis, ledger.store, keys).drain()
    await copy_keys(engine.redis, twin)
    await wipe(engine.redis)
    intact = Engine(twin, catalog(), keys=keys, test_clock=True)
    async with serving(engine) as wiped, serving(intact) as expected:
        got = await call(wiped)
        assert got == await call(expected)
        for account in {c[0] for c in charges}:  # load what the call did not touch
            await wiped.engine.balance(account)
            await expected.engine.balance(account)
        # An account created now (exists nowhere) differs only in its creation time.
        assert await keyspace(engine.redis, skip=NEW_DEMO) == await keyspace(twin, skip=NEW_DEMO)
        await replays_without_charging(wiped, charges)
    await make_worker(engine.redis, ledger.store, keys).drain()
    report = await Reconciler(engine.redis, ledger.store, keys).check(progress=False)
    assert report == {}, "\n".join(str(d) for ds in report.values() for d in ds)


async def test_worker_keeps_applying_across_a_wipe(
    ledger: Ledger,
    engine: Engine,
    workload: Workload,
    keys: KeySpace,
) -> None:
    """A running worker survives a wipe: events written after it reach the ledger exactly once."""
    install_hydration(engine, ledger.store)
    worker = make_worker(engine.redis, ledger.store, keys, block_ms=100)
    await worker.setup()
    task = asyncio.create_task(worker.run())
    try:
        await workload.create(8)
        await workload.run(300)
        await _until_applied(ledger, workload)
        await wipe(engine.redis)
        await workload.run(300)  # every account loads from the ledger on first use
        await _until_applied(ledger, workload)
    finally:
        worker.stop()
        await task
    await assert_consistent(engine, ledger, workload)


async def _until_applied(ledger: Ledger, workload: Workload) -> None:
    """Wait (at most 30 s) until the ledger holds an event for every successful operation."""
    missing: dict[str, int] = {}
    for _ in range(300):
        counts = await ledger.store.event_counts()
        missing = {k: n - counts.get(k, 0) for k, n in workload.expected.items()}
        if max(missing.values()) <= 0:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"events not in the ledger after 30 s, by kind: {missing}")
