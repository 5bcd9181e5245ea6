"""The engine on a real 3-master Redis Cluster (cluster_kit.LocalCluster).

Every key of an account, and the shard stream its scripts append to, hash to one slot; every
operation runs on the cluster (a script touching two slots would get CROSSSLOT) and answers what
it answers on a single node; the pipelined hot path reaches every master, and keeps answering
when a slot moves under it (MOVED) or is being moved (ASK).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from redis.crc import key_slot
from test_first_branch import MICRO, NOW, SMALL, _alike

from cluster_kit import LocalCluster, Node, fast_client
from creditgate.driver.cluster import ClusterFastRedis, cluster_client, first_key
from creditgate.driver.wire import command, encode
from creditgate.engine import Engine, KeySpace

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from redis.asyncio import Redis as AsyncRedis

ACCOUNTS = [f"acct-{i}" for i in range(24)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


@pytest_asyncio.fixture
async def on_cluster(cluster: LocalCluster) -> AsyncIterator[tuple[Engine, ClusterFastRedis]]:
    """An engine on the cluster (redis-py's cluster client and ClusterFastRedis), emptied."""
    client = cluster_client(cluster.url, timeout=5.0)
    fast = ClusterFastRedis(cluster.url)
    try:
        await client.flushdb()
        yield Engine(client, SMALL, test_clock=True, fast=fast), fast
    finally:
        await fast.aclose()
        await client.aclose()


def test_every_key_of_an_account_and_its_shard_stream_share_one_slot() -> None:
    rng = random.Random(7)  # noqa: S311 - names to hash, not secrets
    for keys in (KeySpace(), KeySpace("other", 64), KeySpace("one", 1)):
        for _ in range(2000):
            account = "".join(rng.choices("abcdefghij-_.0123456789", k=rng.randint(1, 40)))
            rids = [f"r{rng.randint(0, 10**9)}" for _ in range(3)]
            names = [*keys.account(account, *rids), keys.record_prefix(account) + "x"]
            slots = {key_slot(n.encode()) for n in names}
            assert len(slots) == 1, f"{account}: keys on slots {slots}"
            assert keys.stream(keys.shard_of(account)) in names


def test_the_router_reads_the_first_key_of_a_command() -> None:
    script = command(6, encode(["EVALSHA", "f" * 40, 2, "{cg:3}:a:x", "{cg:3}:ev", "argv"]))
    assert first_key(script) == b"{cg:3}:a:x"
    assert first_key(command(2, encode(["GET", "k"]))) == b"k"
    assert first_key(command(3, encode(["EVALSHA", "f" * 40, 0]))) is None
    assert first_key(command(2, encode(["SCRIPT", "LOAD"]))) is None


async def _exercise(engine: Engine) -> list[Any]:
    """Every kind of script, on many accounts; the answers (creation instants left out)."""
    out: list[Any] = []
    for a in ACCOUNTS:
        await engine.create_account(a, "p", 1)  # answers the creation instant: not compared
        await engine.advance_clock(a, to_ms=NOW)
        out.append(await engine.grant(a, "bonus", 3 * MICRO, "g1"))
        out.extend([await engine.consume(a, "t.use", 2, {}, f"c{i}") for i in range(4)])
        out.append(await engine.consume(a, "t.use", 2, {}, "c0"))  # a replay
        out.append(await engine.reserve(a, "t.use", 3, {}, "h1"))
        out.append(await engine.settle(a, "h1", 1))
        out.append(await engine.reserve(a, "t.use", 2, {}, "h2"))
        out.append(await engine.release(a, "h2"))
    batch = [(a, "t.use", 1, {}, f"b-{a}", False) for a in ACCOUNTS]
    out.extend(await engine.consume_many(batch))
    out.extend([await engine.balance(a) for a in ACCOUNTS])
    return [_alike(x) for x in out]


async def test_every_operation_answers_on_the_cluster_as_on_one_node(
    cluster: LocalCluster,
    on_cluster: tuple[Engine, ClusterFastRedis],
    redis: AsyncRedis,
    redis_url: str,
) -> None:
    engine, fast = on_cluster
    masters = cluster.live_masters()
    before = [_evalsha_calls(m) for m in masters]
    got = await _exercise(engine)
    # The suite's Redis: one node (or, with CREDITGATE_TEST_CLUSTER=1, a second cluster).
    single_fast = fast_client(redis_url)
    try:
        want = await _exercise(Engine(redis, SMALL, test_clock=True, fast=single_fast))
    finally:
        await single_fast.aclose()
    assert got == want
    after = [_evalsha_calls(m) for m in masters]
    keys = [_dbsize(m) for m in masters]
    assert all(k > 0 for k in keys), f"accounts did not spread over the masters: {keys}"
    assert all(a > b for a, b in zip(after, before, strict=True)), "a master got no script call"
    assert len({fast.route(k) for k in [engine.keys.account(a)[0] for a in ACCOUNTS]}) == 3


async def test_a_slot_moved_under_the_hot_path_is_followed(
    cluster: LocalCluster, on_cluster: tuple[Engine, ClusterFastRedis]
) -> None:
    """MOVED: the account's slot moves to another master between two charges."""
    engine, fast = on_cluster
    await engine.create_account("mover", "p", 1)
    await engine.advance_clock("mover", to_ms=NOW)
    first = await engine.consume("mover", "t.use", 3, {}, "m1")
    hash_key = engine.keys.account("mover")[0]
    get = command(3, encode(["HGET", hash_key, "plan"]))
    assert await fast.call(get) == b"p"
    source = cluster.master_of(hash_key)
    target = next(m for m in cluster.live_masters() if m.port != source.port)
    _migrate(cluster, key_slot(hash_key.encode()), source, target)
    assert await fast.call(get) == b"p", "MOVED was not followed"
    second = await engine.consume("mover", "t.use", 3, {}, "m2")
    assert second.allowed
    assert first.allowed
    replay = await engine.consume("mover", "t.use", 3, {}, "m1")
    assert replay.replayed, "the idempotency record did not move with the slot"
    assert replay.allowed


async def test_a_slot_being_migrated_is_asked_for(
    cluster: LocalCluster, on_cluster: tuple[Engine, ClusterFastRedis]
) -> None:
    """ASK: a key the source no longer has is written on the importing node, map unchanged."""
    _, fast = on_cluster
    key = "{ask-me}:k"
    slot = key_slot(key.encode())
    source = cluster.master_of(key)
    target = next(m for m in cluster.live_masters() if m.port != source.port)
    with source.client() as s, target.client() as t:
        source_id, target_id = (
            s.execute_command("CLUSTER", "MYID"),
            t.execute_command("CLUSTER", "MYID"),
        )
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            assert await fast.call(command(3, encode(["SET", key, "v"]))) == b"OK"
            assert t.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
            assert s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        finally:
            _finish(cluster, slot, target)


def _evalsha_calls(node: Node) -> int:
    with node.client() as c:
        stats = c.info("commandstats")
    scripts = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(v["calls"]) for k, v in stats.items() if k in scripts)


def _dbsize(node: Node) -> int:
    with node.client() as c:
        return int(c.dbsize())


def _migrate(cluster: LocalCluster, slot: int, source: Node, target: Node) -> None:
    """Move ``slot`` and its keys from ``source`` to ``target``, as redis-cli --cluster reshard."""
    with source.client() as s, target.client() as t:
        source_id = s.execute_command("CLUSTER", "MYID")
        target_id = t.execute_command("CLUSTER", "MYID")
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    _finish(cluster, slot, target)


def _finish(cluster: LocalCluster, slot: int, target: Node) -> None:
    """Give ``slot`` to ``target`` on every master and wait for the cluster to agree."""
    with target.client() as t:
        target_id = t.execute_command("CLUSTER", "MYID")
    for node in cluster.live_masters():
        with node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    cluster.wait_healthy(10)


async def test_the_cluster_client_flags_writes_on_every_node(cluster: LocalCluster) -> None:
    """A redis-py call that fails once written is told apart on a cluster too (failures.py)."""
    client = cluster_client(cluster.url, timeout=5.0)
    try:
        for i in range(30):  # keys on every master: the client learns them all
            await client.set(f"k{i}", 1)
        nodes = client.get_nodes()  # type: ignore[attr-defined]  # typed as Redis
        assert len(nodes) == 3
        assert all(n.connection_class.__name__.startswith("Marked") for n in nodes)
    finally:
        await client.aclose()
