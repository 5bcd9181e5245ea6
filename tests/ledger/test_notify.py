"""Notifications from the stream to a real webhook receiver, on SQLite and PostgreSQL.

``notice`` events are XADDed in the exact format of ``events/schema.py`` (the Lua emitter
comes later); the notifier's worker puts them in the outbox, the dispatcher posts them to a
local HTTP server that verifies every signature with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from conftest import SHARDS
from creditgate.domain.errors import InvalidArgumentError, NotFoundError
from creditgate.ledger import open_ledger
from creditgate.ledger.consumer import LedgerConsumer
from creditgate.ledger.sql import SqlLedger
from creditgate.notify import (
    Dispatcher,
    DispatchSettings,
    Notifications,
    NotifyConsumer,
    NotifyStore,
)
from creditgate.wiring.consumers import Consumers
from creditgate.wiring.settings import Settings
from creditgate.worker import Worker
from webhook_kit import SECRET, Receiver, notice, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from redis.asyncio import Redis as AsyncRedis

    from conftest import Ledger
    from creditgate.engine.keys import KeySpace

FAST = DispatchSettings(schedule=(0.05, 0.05, 0.05), timeout_s=5.0, poll_s=0.05, lease_s=1.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver(secrets=[SECRET]))


@pytest.fixture
async def store(ledger: Ledger) -> NotifyStore:
    assert isinstance(ledger.store, SqlLedger)
    return NotifyStore(ledger.store)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def xadd_notice(
    redis: AsyncRedis,
    keys: KeySpace,
    account: str,
    kind: str,
    **kw: Any,  # noqa: ANN401 - webhook_kit.notice's keywords
) -> str:
    """XADD one notice to the account's shard stream; return its event id."""
    stream = keys.stream(keys.shard_of(account))
    eid = await redis.xadd(stream, notice(account, kind, **kw))  # type: ignore[arg-type]
    return f"{stream}/{eid.decode()}"


def notify_worker(redis: AsyncRedis, store: NotifyStore, keys: KeySpace) -> Worker:
    return Worker(redis, NotifyConsumer(store), keys, batch=100, block_ms=0, claim_idle_ms=1000)


async def deliver_all(store: NotifyStore, http: httpx.AsyncClient, rounds: int = 60) -> None:
    """Run dispatcher passes until nothing is pending (retries included)."""
    d = Dispatcher(store, FAST)
    for _ in range(rounds):
        await d.run_once(http)
        if await store.pending() == 0:
            return
        await asyncio.sleep(0.05)
    msg = f"{await store.pending()} deliveries still pending"
    raise AssertionError(msg)


async def test_notices_from_the_stream_arrive_once_each_signed(  # noqa: PLR0913, PLR0917 - fixtures
    ledger: Ledger,
    store: NotifyStore,
    redis: AsyncRedis,
    keys: KeySpace,
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    api = Notifications(store)
    await api.create_endpoint("acct-1", receiver.url, secret=SECRET)
    low = await xadd_notice(redis, keys, "acct-1", "credit_balance_low", request_id="r-low")
    await xadd_notice(
        redis, keys, "acct-1", "credit_balance_depleted", bal=0, th=0, request_id="r-0"
    )
    await xadd_notice(redis, keys, "acct-2", "credit_balance_low")  # no endpoint for acct-2
    await xadd_notice(redis, keys, "acct-1", "account_stopped", pool="", bal=0, th=None)
    # The ledger consumes the same entries in its own group, and is not disturbed by them; its
    # trimming keeps what the notifier's group has not acknowledged yet.
    worker = notify_worker(redis, store, keys)
    await worker.setup()
    ledger_worker = Worker(redis, LedgerConsumer(ledger.store), keys, block_ms=0)
    assert await ledger_worker.drain() == 4
    assert await worker.drain() == 4  # acct-2's is in the outbox too, with no delivery
    # A redelivered batch (a crash before XACK) adds nothing.
    entries = await redis.xrange(low.split("/")[0])
    from creditgate.events.schema import parse_entry  # noqa: PLC0415

    again = [parse_entry(low.split("/")[0], eid, f) for eid, f in entries]
    assert (await worker.consumer.apply(again)).applied == 0

    await deliver_all(store, http)
    assert sorted(r.body["type"] for r in receiver.got) == [
        "account_stopped", "credit_balance_depleted", "credit_balance_low",
    ]  # fmt: skip
    assert len(set(receiver.ids())) == 3
    assert all(r.verified_by == [SECRET] for r in receiver.got)
    first = next(r for r in receiver.got if r.body["type"] == "credit_balance_low")
    assert first.body["timestamp"] == "2025-11-24T16:00:00.000+00:00"
    assert first.body["data"] == {
        "account": "acct-1", "pool": "wallet", "request_id": "r-low",
        "balance": "4990000", "balance_units": "4.99",
        "threshold": "5000000", "threshold_units": "5",
    }  # fmt: skip
    stopped = next(r for r in receiver.got if r.body["type"] == "account_stopped")
    assert "threshold" not in stopped.body["data"]

    page, cursor = await api.sent("acct-1", limit=2)
    assert [n.kind for n in page] == ["account_stopped", "credit_balance_depleted"]
    assert cursor is not None
    rest, end = await api.sent("acct-1", limit=2, cursor=cursor)
    assert [n.kind for n in rest] == ["credit_balance_low"]
    assert end is None
    assert rest[0].source == low
    assert [(d.state, d.attempts, d.last_status) for d in rest[0].deliveries] == [
        ("delivered", 1, 200)
    ]
    log = await api.attempts(rest[0].notification_id)
    assert [(a.attempt, a.status, a.error) for a in log] == [(1, 200, "")]
    assert log[0].duration_ms >= 0
    other, _ = await api.sent("acct-2")
    assert [(n.kind, n.deliveries) for n in other] == [("credit_balance_low", ())]


async def test_a_500_is_retried_with_the_same_webhook_id(
    store: NotifyStore, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.script = [500, 503]
    api = Notifications(store)
    await api.create_endpoint("", receiver.url, secret=SECRET)  # global
    assert await api.notify("acct-9", "credit_purchase_failed", {"amount": 10_000_000}, "pf-1")
    await deliver_all(store, http)
    assert [r.status for r in receiver.got] == [500, 503, 200]
    assert set(receiver.ids()) == {"pf-1"}
    assert all(r.verified_by == [SECRET] for r in receiver.got)
    assert receiver.got[0].body["data"] == {
        "account": "acct-9",
        "amount": "10000000",
        "amount_units": "10",
    }
    log = await api.attempts("pf-1")
    assert [(a.attempt, a.status) for a in log] == [(1, 500), (2, 503), (3, 200)]


async def test_the_schedule_ends_in_failed(
    store: NotifyStore, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.script = [500] * 10
    api = Notifications(store)
    await api.create_endpoint("acct-9", receiver.url, secret=SECRET)
    await api.notify("acct-9", "credit_auto_recharge_triggered", {"amount": 5}, "ar-1")
    await deliver_all(store, http)
    assert len(receiver.got) == len(FAST.schedule) + 1
    [n], _ = await api.sent("acct-9")
    assert [(d.state, d.attempts, d.last_status) for d in n.deliveries] == [("failed", 4, 500)]


async def test_410_disables_the_endpoint(
    store: NotifyStore, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.script = [410]
    api = Notifications(store)
    ep = await api.create_endpoint("acct-9", receiver.url, secret=SECRET)
    await api.notify("acct-9", "credit_balance_low", {"balance": 1}, "n-1")
    await api.notify("acct-9", "credit_balance_depleted", {"balance": 0}, "n-2")
    await deliver_all(store, http)
    assert len(receiver.got) <= 2
    assert receiver.got[0].status == 410
    [after] = await api.endpoints("acct-9")
    assert (after.endpoint_id, after.enabled) == (ep.endpoint_id, False)
    assert "410" in after.disabled_reason
    got = len(receiver.got)
    await api.notify("acct-9", "credit_balance_low", {"balance": 1}, "n-3")
    await deliver_all(store, http)
    assert len(receiver.got) == got  # a disabled endpoint gets nothing new
    [n3, *_], _ = await api.sent("acct-9")
    assert n3.deliveries == ()


async def test_a_restart_between_enqueue_and_delivery_loses_nothing(
    ledger: Ledger, redis: AsyncRedis, keys: KeySpace, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    assert isinstance(ledger.store, SqlLedger)
    first = NotifyStore(ledger.store)
    await Notifications(first).create_endpoint("acct-1", receiver.url, secret=SECRET)
    await xadd_notice(redis, keys, "acct-1", "credit_balance_low")
    assert await notify_worker(redis, first, keys).drain() == 1
    # A dispatcher leases the delivery, then dies before posting it.
    leased = await first.claim_due(int(time.time() * 1000), 1000, 10)
    assert len(leased) == 1
    await ledger.store.close()  # the process is gone; only the database remains

    reopened = await open_ledger(ledger.url)
    try:
        assert isinstance(reopened, SqlLedger)
        second = NotifyStore(reopened)
        assert await second.pending() == 1
        await asyncio.sleep(1.1)  # the dead dispatcher's lease (1 s) ends
        await deliver_all(second, http)
    finally:
        await reopened.close()
    assert len(receiver.got) == 1
    assert receiver.got[0].verified_by == [SECRET]


async def test_rotation_signs_with_every_active_secret(
    store: NotifyStore, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    api = Notifications(store)
    ep = await api.create_endpoint("acct-1", receiver.url, kinds=["credit_balance_low"])
    old = ep.secrets[0]
    assert old.startswith("whsec_")
    rotated = await api.rotate_secret(ep.endpoint_id)
    new = rotated.secrets[0]
    assert rotated.secrets == (new, old)
    receiver.secrets = [old, new]
    await api.notify("acct-1", "credit_balance_low", {"balance": 1}, "rot-1")
    await api.notify("acct-1", "credit_balance_depleted", {"balance": 0}, "rot-x")  # filtered out
    await deliver_all(store, http)
    [got] = receiver.got
    assert len(got.signatures) == 2
    assert sorted(got.verified_by) == sorted([old, new])

    await api.rotate_secret(ep.endpoint_id, SECRET, drop_previous=True)
    receiver.secrets = [old, new, SECRET]
    await api.notify("acct-1", "credit_balance_low", {"balance": 1}, "rot-2")
    await deliver_all(store, http)
    assert receiver.got[-1].verified_by == [SECRET]


async def test_bad_input_changes_nothing(store: NotifyStore) -> None:
    api = Notifications(store)
    cases = [
        (api.create_endpoint("a", "ftp://example.com/x"), "http:// or https://"),
        (api.create_endpoint("a", "https:///nohost"), "with a host"),
        (api.create_endpoint("a", "https://x.test", secret="abc"), "must start with 'whsec_'"),  # noqa: S106
        (api.create_endpoint("a", "https://x.test", secret="whsec_!!"), "base64"),  # noqa: S106
        (api.create_endpoint("a", "https://x.test", secret="whsec_AAAA"), "24-64 bytes"),  # noqa: S106
        (api.create_endpoint("a", "https://x.test", kinds=["low"]), "unknown notification kind"),
        (api.notify("a", "balance_low", {}, "n-1"), "unknown notification kind"),
        (api.notify("a", "credit_balance_low", {}, ""), "notification_id"),
        (api.sent("a", limit=0), "limit 0"),
        (api.sent("a", cursor="x"), "cursor"),
    ]
    for call, words in cases:
        with pytest.raises(InvalidArgumentError, match=words):
            await call
    assert await api.endpoints() == []
    with pytest.raises(NotFoundError, match="no webhook endpoint"):
        await api.rotate_secret("ep_missing")
    with pytest.raises(NotFoundError, match="no webhook endpoint"):
        await api.delete_endpoint("ep_missing")


async def test_notify_is_idempotent_on_its_id(
    store: NotifyStore, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    api = Notifications(store)
    ep = await api.create_endpoint("acct-1", receiver.url, secret=SECRET)
    assert await api.notify("acct-1", "credit_auto_recharge_triggered", {"amount": 1}, "t-1")
    assert not await api.notify("acct-1", "credit_auto_recharge_triggered", {"amount": 1}, "t-1")
    await deliver_all(store, http)
    assert receiver.ids() == ["t-1"]
    await api.set_enabled(ep.endpoint_id, enabled=False)
    await api.notify("acct-1", "credit_auto_recharge_triggered", {"amount": 1}, "t-2")
    await api.delete_endpoint(ep.endpoint_id)
    assert await api.endpoints() == []
    await deliver_all(store, http)
    assert receiver.ids() == ["t-1"]


async def test_the_worker_runs_the_ledger_and_the_notifier(
    ledger: Ledger, redis: AsyncRedis, keys: KeySpace, receiver: Receiver
) -> None:
    """``creditgate worker``: both groups, the ledger unaffected, the dispatcher woken at once."""
    settings = Settings(key_prefix="cg", shards=SHARDS, notify_retry_schedule=(0.05,))
    assert isinstance(ledger.store, SqlLedger)
    await Notifications(NotifyStore(ledger.store)).create_endpoint(
        "acct-1", receiver.url, secret=SECRET
    )
    await xadd_notice(redis, keys, "acct-1", "credit_balance_low", request_id="burst")
    consumers = Consumers(settings, redis, ledger.store)
    assert await consumers.drain() == 2  # one event, in each of the two groups
    assert (await ledger.store.event_counts()).get("notice") == 1
    assert [r.body["data"]["request_id"] for r in receiver.got] == ["burst"]

    running = Consumers(settings.model_copy(update={"worker_block_ms": 50}), redis, ledger.store)
    task = asyncio.create_task(running.run())
    try:
        await xadd_notice(
            redis, keys, "acct-1", "credit_balance_depleted", bal=0, request_id="live"
        )
        for _ in range(100):
            if len(receiver.got) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        running.stop()
        await task
    assert [r.body["data"]["request_id"] for r in receiver.got] == ["burst", "live"]
    assert all(r.verified_by == [SECRET] for r in receiver.got)


async def test_two_dispatchers_never_send_one_notification_twice(
    ledger: Ledger, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    """Two workers' dispatchers on one outbox (own connections): the lease splits the work."""
    assert isinstance(ledger.store, SqlLedger)
    one = NotifyStore(ledger.store)
    api = Notifications(one)
    await api.create_endpoint("acct-1", receiver.url, secret=SECRET)
    for i in range(60):
        await api.notify("acct-1", "credit_balance_low", {"balance": i}, f"n-{i}")
    other = await open_ledger(ledger.url)
    try:
        assert isinstance(other, SqlLedger)
        two = NotifyStore(other)
        small = DispatchSettings(schedule=(0.05,), batch=7, lease_s=30.0)
        a, b = Dispatcher(one, small), Dispatcher(two, small)
        for _ in range(30):
            await asyncio.gather(a.run_once(http), b.run_once(http))
            if await one.pending() == 0:
                break
    finally:
        await other.close()
    assert sorted(receiver.ids()) == sorted(f"n-{i}" for i in range(60))  # each exactly once
    assert all(r.verified_by == [SECRET] for r in receiver.got)
