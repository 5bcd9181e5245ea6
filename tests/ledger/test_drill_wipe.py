"""Drill: Redis wiped under load, followed by every admin RPC (issue 17, item 9).

Eight gRPC clients charge six accounts with unique request ids while the worker runs. Redis is
wiped (FLUSHDB and SCRIPT FLUSH) once the worker has applied every acknowledged charge, then
every admin RPC is made on accounts that only the ledger knows, with the load running again.
In the end every allowed charge is in the ledger exactly once, every request id replays without
charging, nothing failed, and Redis and the ledger agree. It prints how soon after the wipe the
admin RPCs were all answered on the ledger's state (run with -s to see it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from test_wipe import MICRO, Side, serving, wipe

from conftest import Ledger, assert_consistent, make_worker
from creditgate.ledger.hydrate import install_hydration
from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from creditgate.engine import Engine
    from creditgate.engine.keys import KeySpace


async def _until(done: Callable[[], bool]) -> None:
    """Poll a condition the load's clients change (at most 60 s)."""
    for _ in range(6000):
        if done():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the drill's load did not get there in 60 s")


@dataclass
class Load:
    """Charges of 1 credit with unique request ids, over gRPC, until stopped."""

    side: Side
    accounts: list[str]
    allowed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    stop: bool = False
    inflight: int = 0

    async def client(self, n: int) -> None:
        i = 0
        while not self.stop:
            await self.running.wait()
            i += 1
            accounts = self.accounts
            rid, account = f"L{n}-{i}", accounts[(n + i) % len(accounts)]
            self.inflight += 1
            try:
                answer = await self.charge(account, rid)
            except grpc.aio.AioRpcError:
                self.failed.add(f"{account}/{rid}")
            else:
                if answer.allowed:
                    self.allowed.add(f"{account}/{rid}")
            finally:
                self.inflight -= 1

    async def charge(self, account: str, rid: str) -> quota_pb2.CheckAndConsumeResponse:
        request = quota_pb2.CheckAndConsumeRequest(
            account_id=account, action="use", quantity=1, request_id=rid
        )
        answer: quota_pb2.CheckAndConsumeResponse = await self.side.quota.CheckAndConsume(
            request, timeout=10
        )
        return answer


async def every_admin_rpc(side: Side, account: str) -> dict[str, float]:
    """Each admin RPC in turn on an account known only to the ledger; seconds each took."""
    a = side.admin
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "CreateAccount": lambda: a.CreateAccount(
            admin_pb2.CreateAccountRequest(account_id=account, plan_id="mixed")
        ),
        "GetAccount": lambda: a.GetAccount(admin_pb2.GetAccountRequest(account_id=account)),
        "UpdateAccount": lambda: a.UpdateAccount(
            admin_pb2.UpdateAccountRequest(account_id=account, anchor_day=3)
        ),
        "Grant": lambda: a.Grant(
            admin_pb2.GrantRequest(
                account_id=account, pool_id="bonus", amount=5 * MICRO, grant_id=f"drill-{account}"
            )
        ),
        "SetPoolSettings": lambda: a.SetPoolSettings(
            admin_pb2.SetPoolSettingsRequest(account_id=account, pool_id="payg", cap=50 * MICRO)
        ),
        "AdvanceTestClock": lambda: a.AdvanceTestClock(
            admin_pb2.AdvanceTestClockRequest(account_id=account, seconds=60)
        ),
    }
    took: dict[str, float] = {}
    for name, call in calls.items():
        started = asyncio.get_running_loop().time()
        code = grpc.StatusCode.OK
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        # CreateAccount is the first call after the wipe: the ledger knows the account.
        want = grpc.StatusCode.ALREADY_EXISTS if name == "CreateAccount" else grpc.StatusCode.OK
        assert code == want, (account, name, code)
        took[name] = asyncio.get_running_loop().time() - started
    return took


async def test_drill_redis_wiped_under_load_then_every_admin_rpc(
    ledger: Ledger, engine: Engine, keys: KeySpace
) -> None:
    """No charge lost or doubled, every admin RPC on the ledger's state, reconcile clean."""
    install_hydration(engine, ledger.store)
    worker = make_worker(engine.redis, ledger.store, keys, block_ms=50)
    await worker.setup()
    task = asyncio.create_task(worker.run())
    accounts = [f"d{i}" for i in range(6)]
    async with serving(engine) as side:
        for a in accounts:
            await side.admin.CreateAccount(
                admin_pb2.CreateAccountRequest(account_id=a, plan_id="capped")
            )
        load = Load(side, accounts)
        load.running.set()
        clients = [asyncio.create_task(load.client(n)) for n in range(8)]
        try:
            await _until(lambda: len(load.allowed) >= 300)
            # A charge acknowledged but not yet in the ledger is lost with Redis (docs/LEDGER.md,
            # no persistence): the wipe comes once the worker has applied every one of them.
            load.running.clear()
            await _until(lambda: not load.inflight)
            await _until_ledger_has(ledger, len(load.allowed))
            await wipe(engine.redis)
            wiped_at = asyncio.get_running_loop().time()
            load.accounts = accounts[3:]  # the first call on the others is an admin RPC
            load.running.set()
            took = dict(
                zip(
                    accounts[:3],
                    await asyncio.gather(*(every_admin_rpc(side, a) for a in accounts[:3])),
                    strict=True,
                )
            )
            recovered = asyncio.get_running_loop().time() - wiped_at
            load.accounts = accounts
            await _until(lambda: len(load.allowed) >= 600)
        finally:
            load.stop = True
            load.running.set()
            await asyncio.gather(*clients)
        assert not load.failed, sorted(load.failed)[:5]
        for key in sorted(load.allowed):
            account, rid = key.split("/")
            assert (await load.charge(account, rid)).replayed, key
    await _until_ledger_has(ledger, len(load.allowed))
    worker.stop()
    await task
    counts = await ledger.store.event_counts()
    assert counts["charge"] == len(load.allowed), "each allowed charge is in the ledger once"
    await assert_consistent(engine, ledger, None)
    slowest = max(t for each in took.values() for t in each.values())
    print(  # noqa: T201 - the drill's figures, shown with pytest -s
        f"wipe drill: {len(load.allowed)} charges, admin RPCs on the ledger's state "
        f"{recovered * 1000:.0f} ms after the wipe, slowest {slowest * 1000:.1f} ms"
    )


async def _until_ledger_has(ledger: Ledger, charges: int) -> None:
    """Wait (at most 30 s) until the ledger holds that many charges."""
    counts: dict[str, int] = {}
    for _ in range(300):
        counts = await ledger.store.event_counts()
        if counts.get("charge", 0) >= charges:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the ledger has {counts} after 30 s, short of {charges} charges")
