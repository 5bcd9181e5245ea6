"""Acceptance test of ``make run``: the real ``creditgate serve --embedded --demo`` process.

The sidecar runs as a subprocess with its private redis-server in a temporary data directory;
the CLI's client commands run as subprocesses against it and their JSON is parsed
(``served_kit``). At the end SIGTERM must stop the sidecar (exit status 0) and the
redis-server it started, and a restart on the same data directory must find the data again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from creditgate.v1 import quota_pb2, quota_pb2_grpc
from served_kit import (
    MICRO,
    READY_TRIES,
    STOP_SECONDS,
    Served,
    cli,
    free_port,
    pool,
    redis_servers,
    run_cli,
    server_children,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


# --- against the running sidecar -----------------------------------------------------------


def test_reflection_lists_services_and_methods(served: Served) -> None:
    """Reflection names both services; QuotaService's file describes the quota methods."""
    with grpc.insecure_channel(served.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="creditgate.v1.QuotaService"
            ),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="creditgate.v1.AdminService"
            ),
        ]
        responses = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {
        "creditgate.v1.QuotaService",
        "creditgate.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names

    methods: dict[str, set[str]] = {}
    for response in responses[1:]:
        assert not response.HasField("error_response"), response.error_response
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for service in proto.service:
                methods[f"{proto.package}.{service.name}"] = {m.name for m in service.method}
    assert {"CheckAndConsume", "Reserve", "Settle", "Release", "Refund", "GetBalance"} <= methods[
        "creditgate.v1.QuotaService"
    ]
    assert {"CreateAccount", "Grant", "SetPoolSettings"} <= methods["creditgate.v1.AdminService"]


def test_check_charges_and_balance_shows_it(served: Served) -> None:
    """`check` on a demo account charges 5 integration credits; `balance` shows the pool down."""
    decision = cli(
        served.target, "check", "demo-zite-free", "zite.email.send", "--request-id", "cli-1"
    )
    assert decision["allowed"] is True
    assert decision["reason"] == "REASON_ALLOWED"
    assert int(decision["cost"]) == 5 * MICRO
    assert decision["meter"] == "integration_credit"
    assert [(d["pool_id"], int(d["amount"])) for d in decision["debits"]] == [
        ("integration", 5 * MICRO)
    ]
    after = pool(cli(served.target, "balance", "demo-zite-free"), "integration")
    assert int(after["balance"]) == (1000 - 5) * MICRO  # the demo plan's 1,000 a month


def test_grant_adds_to_the_bonus_pool(served: Served) -> None:
    """`grant` adds credits to the demo bonus (50 from --demo) and `balance` shows the lot."""
    granted = cli(
        served.target,
        "grant",
        "demo-agent-team",
        "bonus",
        "5",
        "--grant-id",
        "cli-g",
        "--note",
        "cli test",
    )
    assert granted["grant_id"] == "cli-g"
    assert int(granted["balance"]) == 55 * MICRO
    assert granted["unit"] == "agent_credit"
    assert granted["replayed"] is False
    bonus = pool(cli(served.target, "balance", "demo-agent-team"), "bonus")
    assert int(bonus["balance"]) == 55 * MICRO
    assert {lot["lot_id"] for lot in bonus["lots"]} == {"demo-welcome", "cli-g"}


def test_account_create_then_charge(served: Served) -> None:
    """`account create` makes an account on a plan; it can be charged right away."""
    account = cli(served.target, "account", "create", "cli-new", "--plan", "zite_free")
    assert account["account_id"] == "cli-new"
    assert account["plan_id"] == "zite_free"
    assert account["status"] == "ACCOUNT_STATUS_ACTIVE"
    decision = cli(served.target, "check", "cli-new", "zite.document.generate")
    assert decision["allowed"] is True
    assert int(decision["cost"]) == 10 * MICRO


def test_account_terms_sets_seats_overrides_and_flags(served: Served) -> None:
    """`account terms` takes decimals, sends micro-units and replaces the account's terms."""
    cli(served.target, "account", "create", "cli-terms", "--plan", "zite_pro")
    account = cli(
        served.target, "account", "terms", "cli-terms", "--seats", "3",
        "--flag", "existing_customer", "--allowance", "integration=60000.5",
    )  # fmt: skip
    assert account["terms"]["seats"] == 3
    assert account["terms"]["flags"] == ["existing_customer"]
    assert int(account["terms"]["allowances"]["integration"]) == 60_000_500_000
    decision = cli(served.target, "check", "cli-terms", "zite.slack")
    assert int(decision.get("cost", 0)) == 0
    balance = cli(served.target, "balance", "cli-terms")
    assert int(pool(balance, "integration")["balance"]) == 60_000_500_000
    (shown,) = run_cli(served.target, [("account", "get", "cli-terms")])
    assert shown.returncode == 0, shown.stderr
    assert "existing_customer" in shown.stdout
    assert "allowances.integration  60000.5" in shown.stdout  # units, not micro-units
    (bad,) = run_cli(served.target, [("account", "terms", "cli-terms", "--flag", "gold")])
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr
    assert "'gold'" in bad.stderr


def test_account_create_with_a_flag_pays_the_first_period_at_once(served: Served) -> None:
    """`account create --flag custom_integration`: seed 000's hosting from the first period."""
    account = cli(served.target, "account", "create", "cli-host", "--plan", "glue_starter",
                  "--flag", "custom_integration")  # fmt: skip
    assert account["terms"]["flags"] == ["custom_integration"]
    [hosting] = account["recurring"]
    assert (hosting["recurring_id"], int(hosting["cost"])) == ("base_hosting", 500_000_000)
    assert int(pool(cli(served.target, "balance", "cli-host"), "base")["balance"]) == 1_500_000_000
    plain = cli(served.target, "account", "create", "cli-plain", "--plan", "glue_starter")
    assert not plain["terms"].get("flags")  # no terms sent


def test_refusals_name_the_command_that_fixes_them(served: Served) -> None:
    """Credits into an allowance, and a credits card of a plan without a balance pool."""
    grant, card = run_cli(served.target, [
        ("grant", "demo-glue-free", "base", "5"),
        ("credits", "demo-glue-free"),
    ])  # fmt: skip
    assert grant.returncode == card.returncode == 1
    assert "hint: grant into a grant or balance pool: creditgate balance demo-glue-free" in (
        grant.stderr
    )
    assert "hint: name one: creditgate credits demo-glue-free --pool POOL" in card.stderr


def test_errors_go_to_stderr_with_the_status(served: Served) -> None:
    """A refused call exits 1 and prints `creditgate: <STATUS>: <message>` on stderr."""
    ghost, again = run_cli(
        served.target,
        [
            ("check", "ghost", "zite.email.send"),
            ("account", "create", "demo-zite-free", "--plan", "zite_free"),
        ],
    )
    assert (ghost.returncode, ghost.stdout) == (1, "")
    assert ghost.stderr.startswith("creditgate: NOT_FOUND: ")
    assert "'ghost'" in ghost.stderr
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.startswith("creditgate: ALREADY_EXISTS: ")
    assert "'demo-zite-free'" in again.stderr


def test_sigterm_exits_zero_and_stops_embedded_redis(served: Served) -> None:
    """SIGTERM: exit status 0 within a few seconds, and the private redis-server is gone."""
    assert redis_servers(served.redis_socket), "the embedded redis-server is not running"
    served.stop()
    assert served.returncode == 0, served.log_tail()
    assert served.stop_seconds is not None
    assert served.stop_seconds < STOP_SECONDS, served.stop_seconds
    assert redis_servers(served.redis_socket) == []
    assert "stopping" in served.log_tail()


# --- after a restart on the same data directory --------------------------------------------


def test_restart_keeps_the_data(restarted: Served) -> None:
    """Started again, the sidecar finds the accounts and the charge of the first run."""
    decision = cli(
        restarted.target, "check", "demo-zite-free", "zite.email.send", "--request-id", "cli-1"
    )
    assert decision["replayed"] is True
    remaining = {b["pool_id"]: int(b["remaining"]) for b in decision["balances"]}
    assert remaining["integration"] == 995 * MICRO


def test_balance_after_restart_lists_the_pools(restarted: Served) -> None:
    """`balance` right after a restart shows every pool with its balance."""
    integration = pool(cli(restarted.target, "balance", "demo-zite-pro"), "integration")
    assert int(integration["balance"]) == 50_000 * MICRO


# --- several server processes on one port --------------------------------------------------


ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def _sockets(pid: int, port: int, state: str) -> int:
    """TCP sockets on local ``port`` in ``state`` that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = str(fd.readlink())
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def served_twice(tmp_path: Path) -> Iterator[Served]:
    """The sidecar with CREDITGATE_PROCESSES=2 (and /metrics)."""
    server = Served(tmp_path, processes=2, metrics_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples /metrics serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_processes_share_the_port_and_both_answer(served_twice: Served) -> None:
    """The second process serves the same port: connections land on both, and all answer.

    The first process's /metrics counts the answers of both, and the metrics files go when the
    sidecar stops.
    """
    assert served_twice.process is not None
    parent = served_twice.process.pid
    (child,) = server_children(parent)
    for _ in range(READY_TRIES):  # the second process listens a moment after the first
        if _sockets(child, served_twice.port, LISTEN):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the second process never listened:\n{served_twice.log_tail()}")
    channels = [
        grpc.insecure_channel(served_twice.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(16)
    ]
    try:
        for i, channel in enumerate(channels):
            stub = quota_pb2_grpc.QuotaServiceStub(channel)
            decision = stub.CheckAndConsume(
                quota_pb2.CheckAndConsumeRequest(
                    account_id="demo-zite-pro",
                    action="zite.email.send",
                    quantity=1,
                    request_id=f"two-{i}",
                ),
                timeout=10,
            )
            assert decision.allowed
        spread = [_sockets(pid, served_twice.port, ESTABLISHED) for pid in (parent, child)]
    finally:
        for channel in channels:
            channel.close()
    assert sum(spread) == len(channels)
    assert min(spread) > 0, spread
    samples = _scrape(served_twice.metrics_port)
    allowed = (("reason", "ALLOWED"), ("rpc", "consume"))
    assert samples["creditgate_decisions_total", allowed] == len(channels)
    ok = (("code", "OK"), ("method", "CheckAndConsume"))
    assert samples["creditgate_rpc_seconds_count", ok] == len(channels)
    assert samples["creditgate_redis_up", ()] == 1
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    (metrics_dir,) = (
        Path(e.split(b"=", 1)[1].decode())
        for e in environ
        if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")
    )
    assert metrics_dir.is_dir()
    served_twice.stop()
    assert served_twice.returncode == 0, served_twice.log_tail()
    assert not Path(f"/proc/{child}").exists()
    assert not metrics_dir.exists()


def test_a_server_process_that_dies_stops_the_sidecar(served_twice: Served) -> None:
    """A second process killed: the first stops too and exits 1, for a supervisor to see."""
    assert served_twice.process is not None
    (child,) = server_children(served_twice.process.pid)
    os.kill(child, signal.SIGKILL)
    served_twice.returncode = served_twice.process.wait(timeout=STOP_SECONDS + 5)
    assert served_twice.returncode == 1
    assert "exited" in served_twice.log_tail()
