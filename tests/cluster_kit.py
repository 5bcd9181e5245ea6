"""A real Redis Cluster for the tests: N masters (and optionally a replica each) on loopback.

Every node is the redis-server binary the rest of the suite uses (``find_redis_server``),
started with ``--cluster-enabled yes`` on a free 127.0.0.1 port (its cluster bus on port +
10000), in a temporary directory removed at the end. The cluster is formed from Python with the
same commands ``redis-cli --cluster create`` sends (CLUSTER SET-CONFIG-EPOCH, MEET, ADDSLOTS,
REPLICATE), so no redis-cli is needed and the kit works on any server that speaks them.

``LocalCluster.start`` returns once every node reports ``cluster_state:ok`` and agrees on who
serves every slot, or raises after ``startup_timeout`` seconds; ``stop`` kills what is left
within a few seconds. Use it as a context manager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from creditgate.driver.cluster import ClusterFastRedis, cluster_client
from creditgate.driver.pipelined import FastRedis
from creditgate.wiring.embedded.redis import find_redis_server

if TYPE_CHECKING:
    from types import TracebackType

# Set to 1 to run the suite's Redis fixtures on a LocalCluster (tests/conftest.py).
CLUSTER_ENV = "CREDITGATE_TEST_CLUSTER"
ON_CLUSTER = os.environ.get(CLUSTER_ENV, "") not in ("", "0")
SLOTS = 16384
_BUS_OFFSET = 10000
_POLL = 0.05


def _free_port() -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port
    msg = "no free loopback port pair for a cluster node"
    raise RuntimeError(msg)


class Node:
    """One redis-server of the cluster."""

    def __init__(self, port: int, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.dir = directory
        self.process = process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)

    def alive(self) -> bool:
        return self.process.poll() is None


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, all on 127.0.0.1.

    Args:
        masters: how many masters share the 16384 slots (in equal ranges, in port order).
        replicas: replicas per master (0 or 1 in practice).
        node_timeout_ms: ``cluster-node-timeout``; a replica starts a failover this long after
            its master stops answering.
        startup_timeout: seconds for the whole cluster to come up and agree.
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        startup_timeout: float = 30.0,
    ) -> None:
        self.masters_count = masters
        self.replicas_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.nodes: list[Node] = []
        self._dir: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        binary = find_redis_server()
        self._dir = Path(tempfile.mkdtemp(prefix="cg-cluster-"))
        try:
            total = self.masters_count * (1 + self.replicas_count)
            for _ in range(total):
                self.nodes.append(self._spawn(binary, _free_port()))
            deadline = time.monotonic() + self.startup_timeout
            for node in self.nodes:
                self._wait(lambda n=node: self._pings(n), deadline, f"node {node.port} to start")
            self._form(deadline)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, binary: Path, port: int) -> Node:
        assert self._dir is not None
        directory = self._dir / str(port)
        directory.mkdir()
        args = [
            str(binary),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603 - our own binary
        return Node(port, directory, process)

    def _form(self, deadline: float) -> None:
        """What ``redis-cli --cluster create`` does: epochs, slots, MEET, REPLICATE."""
        masters = self.nodes[: self.masters_count]
        per = SLOTS // len(masters)
        for i, node in enumerate(masters):
            first = i * per
            last = SLOTS - 1 if i == len(masters) - 1 else first + per - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            with node.client() as c:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        total = len(self.nodes)
        self._wait(lambda: all(self._known(n) == total for n in self.nodes), deadline, "MEET")
        for k, replica in enumerate(self.nodes[self.masters_count :]):
            master = masters[k % len(masters)]
            with master.client() as c:
                master_id = c.execute_command("CLUSTER", "MYID")
            with replica.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", master_id)
        self._wait(self.healthy, deadline, "the cluster to agree (cluster_state:ok)")

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.process.kill()
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(5)
        self.nodes = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- state -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one live master (the seed a cluster client starts from)."""
        return self.live_masters()[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes if n.alive()]

    def live_masters(self) -> list[Node]:
        out = []
        for node in self.nodes:
            if node.alive():
                with contextlib.suppress(Exception), node.client() as c:
                    if c.execute_command("ROLE")[0] == "master":
                        out.append(node)
        return out

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> Node:
        """The live node that serves ``key``'s slot, as the cluster says."""
        node = self.live_masters()[0]
        with node.client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for first, last, owner, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return self.node(int(owner[1]))
        msg = f"no node serves slot {slot}"
        raise RuntimeError(msg)

    def replica_of(self, master: Node) -> Node:
        with master.client() as c:
            role = c.execute_command("ROLE")
        return self.node(int(role[2][0][1]))

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok, all slots are served, replicas are in sync."""
        live = [n for n in self.nodes if n.alive()]
        for node in live:
            try:
                with node.client() as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    if "cluster_state:ok" not in info or f"cluster_slots_ok:{SLOTS}" not in info:
                        return False
                    role = c.execute_command("ROLE")
                    if role[0] == "slave" and role[3] != "connected":
                        return False
            except Exception:  # noqa: BLE001 - a node still starting: not healthy yet
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, time.monotonic() + timeout, "the cluster to be healthy")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _pings(node: Node) -> bool:
        try:
            with node.client() as c:
                return bool(c.ping())
        except Exception:  # noqa: BLE001 - not up yet
            return False

    @staticmethod
    def _known(node: Node) -> int:
        with node.client() as c:
            return len(c.execute_command("CLUSTER", "NODES").strip().splitlines())

    @staticmethod
    def _wait(ready: object, deadline: float, what: str) -> None:
        assert callable(ready)
        while not ready():
            if time.monotonic() > deadline:
                msg = f"timed out waiting for {what}"
                raise TimeoutError(msg)
            time.sleep(_POLL)


def fast_client(url: str) -> FastRedis | ClusterFastRedis:
    """The hot path's pipelined connection for the suite's Redis (one per master on a cluster)."""
    return ClusterFastRedis(url) if ON_CLUSTER else FastRedis(url)


def async_client(url: str, **kwargs: int) -> AsyncRedis:
    """A redis-py asyncio client for the suite's Redis (the cluster client on a cluster)."""
    if ON_CLUSTER:
        return cluster_client(url, timeout=5.0, max_connections=kwargs.get("max_connections"))
    return AsyncRedis.from_url(url, **kwargs)
