"""What the sidecar reports on /metrics about the RPCs it served, read from the real registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest

from creditgate.domain.results import Reason
from creditgate.transport.metrics import LoopHistogram
from creditgate.v1 import admin_pb2, quota_pb2

if TYPE_CHECKING:
    from tests.conftest import Sidecar


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rpc_latency_and_decisions_are_counted(sidecar: Sidecar) -> None:
    """An allowed charge, a denial and a bad request each land under their own labels."""
    await sidecar.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id="acme", plan_id="zite_free")
    )
    ok = {"method": "CheckAndConsume", "code": "OK"}
    bad = {"method": "CheckAndConsume", "code": "INVALID_ARGUMENT"}
    before = {
        "ok": sample("creditgate_rpc_seconds_count", **ok),
        "ok_sum": sample("creditgate_rpc_seconds_sum", **ok),
        "bad": sample("creditgate_rpc_seconds_count", **bad),
    }
    decided = {
        r.name: sample("creditgate_decisions_total", rpc="consume", reason=r.name) for r in Reason
    }
    charge = quota_pb2.CheckAndConsumeRequest(
        account_id="acme", action="zite.email.send", quantity=1
    )
    assert (await sidecar.quota.CheckAndConsume(charge)).allowed
    denied = await sidecar.quota.CheckAndConsume(
        quota_pb2.CheckAndConsumeRequest(
            account_id="acme", action="zite.email.send", quantity=1_000_000
        )
    )
    assert not denied.allowed
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sidecar.quota.CheckAndConsume(
            quota_pb2.CheckAndConsumeRequest(account_id="a b", action="zite.email.send", quantity=1)
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    # A denial is an answer (status OK), counted by its reason.
    assert sample("creditgate_rpc_seconds_count", **ok) == before["ok"] + 2
    assert sample("creditgate_rpc_seconds_sum", **ok) > before["ok_sum"]
    assert sample("creditgate_rpc_seconds_count", **bad) == before["bad"] + 1
    reason = quota_pb2.Reason.Name(denied.reason).removeprefix("REASON_")
    changed = {
        r: sample("creditgate_decisions_total", rpc="consume", reason=r) - n
        for r, n in decided.items()
    }
    assert {r: n for r, n in changed.items() if n} == {"ALLOWED": 1, reason: 1}
    # Every bucket is cumulative: +Inf holds every observation.
    assert sample("creditgate_rpc_seconds_bucket", le="+Inf", **ok) == sample(
        "creditgate_rpc_seconds_count", **ok
    )


def test_loop_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """A value equal to a bound falls in that bucket (Prometheus' "le"); the rest above."""
    hist = LoopHistogram("t_seconds", "test", ["m"], buckets=(0.01, 0.001))
    child = hist.labels("x")
    for seconds in (0.001, 0.0005, 0.002, 0.01, 5.0):
        child.observe(seconds)
    assert hist.labels("x") is child
    (family,) = hist.collect()
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got[("t_seconds_bucket", "0.001")] == 2
    assert got[("t_seconds_bucket", "0.01")] == 4
    assert got[("t_seconds_bucket", "+Inf")] == 5
    assert got[("t_seconds_count", None)] == 5
    assert got[("t_seconds_sum", None)] == pytest.approx(5.0135)
    with pytest.raises(ValueError, match="takes labels"):
        hist.labels("x", "y")


def test_rpc_latency_is_exposed_as_a_histogram() -> None:
    """The text format names the type, so Prometheus computes quantiles from it."""
    text = generate_latest(REGISTRY).decode()
    assert "# TYPE creditgate_rpc_seconds histogram" in text
