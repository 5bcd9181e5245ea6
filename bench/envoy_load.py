"""The load bench/envoy_path.py sends through the front Envoy, and the checks on every run.

A timed run is h2load's GETs for some seconds through a fresh Envoy; an exact check is a fixed
number of GETs, every one answered. Each is checked against Envoy's counters and the credits
creditgate took (GetBalance before and after), so errors cannot pass as speed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import loadgen
import tools
from envoy_stack import ACCOUNT, SMALL, SMALL_CREDITS, Envoy, Gate, envoy, front_config

from creditgate.v1 import quota_pb2, quota_pb2_grpc

EXACT_REQUESTS = 1000
MICRO = 1_000_000


def connections(pids: list[int], port: int) -> list[int]:
    """Established TCP connections to ``port`` that each of ``pids`` holds.

    Both /proc/net/tcp and tcp6: grpc listens on an IPv6 socket (127.0.0.1 is ::ffff:127.0.0.1).
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += str(fd.readlink()) in inodes
        counts.append(held)
    return counts


def bonus(target: str, account: str) -> int:
    """Whole credits in ``account``'s bonus pool (GetBalance), the pool the bench charges."""
    with grpc.insecure_channel(target) as channel:
        reply = quota_pb2_grpc.QuotaServiceStub(channel).GetBalance(
            quota_pb2.GetBalanceRequest(account_id=account), timeout=10
        )
    micros = next(p.balance for p in reply.pools if p.pool_id == "bonus")
    assert micros % MICRO == 0
    return micros // MICRO


def headers(account: str) -> tuple[str, ...]:
    return (f"x-account-id: {account}",)


def exact(front: Envoy, account: str, requests: int) -> dict[str, int]:
    """``requests`` GETs at 64 in flight, every one answered (h2load -n): the codes."""
    done = subprocess.run(
        ["h2load", "-n", str(requests), "-c", "4", "-m", "16", "-t", "1"]
        + [f"-H{h}" for h in headers(account)]
        + [f"http://127.0.0.1:{front.port}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    return loadgen.h2load_codes(done.stdout)


class CheckError(RuntimeError):
    """A run whose answers or charges are not what the load should have produced."""


def check(name: str, counts: dict[str, int], *, gated: bool) -> None:
    """Raise unless the run's counts add up (the run's measured and warm-up requests alike).

    ``counts``: Envoy's counters, ``charged`` (credits creditgate took, when it is the gate)
    and h2load's ``errored``/``timeout``. A request h2load cut off at its end is a reset; the
    service may have answered (and creditgate charged) it, or not.
    """
    ok, over = counts.get("cluster.app.ratelimit.ok", 0), counts.get("over_limit_429", 0)
    s2, s4 = counts["http.ingress.downstream_rq_2xx"], counts["http.ingress.downstream_rq_4xx"]
    resets = counts.get("http.ingress.downstream_rq_rx_reset", 0)
    problems = []
    if counts["http.ingress.downstream_rq_5xx"] or counts["errored"] or counts["timeout"]:
        problems.append("5xx, errored or timed-out requests")
    if counts.get("cluster.app.ratelimit.error") or counts.get(
        "cluster.app.ratelimit.failure_mode_allowed"
    ):
        problems.append("rate-limit service errors")
    if gated and not s2 <= ok <= s2 + resets:
        problems.append("200s and the service's OKs differ by more than the resets")
    if s4 != over:
        problems.append("4xx other than the rate-limit filter's 429")
    if "charged" in counts and not s2 <= counts["charged"] <= s2 + resets:
        problems.append("credits taken differ from the 200s by more than the resets")
    if s2 == 0:
        problems.append("no 200 at all")
    if problems:
        msg = f"{name}: {'; '.join(problems)}: {counts}"
        raise CheckError(msg)


def _counts(front: Envoy) -> dict[str, int]:
    stats = front.stats()
    stats.setdefault("http.ingress.downstream_rq_4xx", 0)
    stats.setdefault("http.ingress.downstream_rq_5xx", 0)
    stats.setdefault("http.ingress.downstream_rq_2xx", 0)
    stats["over_limit_429"] = stats.get("cluster.app.ratelimit.over_limit", 0)
    return stats


def exact_check(binary: Path, workdir: Path, app: int, gate: Gate, workers: int) -> dict[str, Any]:
    """Before timing: a fixed number of requests, each answered; the codes and charges exact."""
    port, admin = tools.free_port(), tools.free_port()
    config = front_config(
        workdir / f"exact-{gate.port}.yaml", listen=port, admin=admin, app=app, gate=gate.port
    )
    result: dict[str, Any] = {}
    with envoy(binary, config, port=port, admin=admin, workers=workers) as front:
        for account, sent, payable in (
            (ACCOUNT, EXACT_REQUESTS, EXACT_REQUESTS),
            (SMALL, 3 * SMALL_CREDITS, SMALL_CREDITS),
        ):
            before = bonus(gate.target, account) if gate.charged else None
            codes = exact(front, account, sent)
            time.sleep(0.2)
            charged = before - bonus(gate.target, account) if before is not None else None
            allowed = payable if gate.charged else sent
            want = {"2xx": allowed, "4xx": sent - allowed, "5xx": 0, "errored": 0, "timeout": 0}
            got = {k: codes[k] for k in want}
            if got != want or (charged is not None and charged != allowed):
                msg = f"exact check on {account}: {got} (charged {charged}), want {want}"
                raise CheckError(msg)
            result[account] = {"sent": sent, **got, "charged": charged}
        stats = _counts(front)
    if gate.charged and stats.get("cluster.app.ratelimit.over_limit", 0) != 2 * SMALL_CREDITS:
        msg = f"exact check: Envoy counted {stats}"
        raise CheckError(msg)
    return result


def one_run(
    binary: Path,
    config: Path,
    *,
    port: int,
    admin: int,
    level: tuple[int, int],
    seconds: float,
    gate: Gate | None,
    workers: int,
) -> dict[str, Any]:
    """One timed h2load run through a fresh Envoy; its Load, codes and checked counts."""
    conns, streams = level
    before = bonus(gate.target, ACCOUNT) if gate and gate.charged else None
    with envoy(binary, config, port=port, admin=admin, workers=workers) as front:
        load, codes = loadgen.h2load_http(
            f"http://127.0.0.1:{port}/",
            headers(ACCOUNT),
            clients=conns,
            streams=streams,
            seconds=seconds,
            pids=gate.cpu_pids if gate else [],
            redis_pid=gate.redis_pid if gate else None,
        )
        # Envoy's connections to the service, by process (they last as long as this Envoy).
        placed = connections(gate.pids, gate.port) if gate else []
        time.sleep(0.3)  # calls Envoy gave up on at the cut-off may still be charging
        counts = _counts(front) | {"errored": codes["errored"], "timeout": codes["timeout"]}
    if before is not None and gate is not None:
        time.sleep(0.2)
        counts["charged"] = before - bonus(gate.target, ACCOUNT)
    load_fields = dataclasses.asdict(load)
    return {"load": load_fields, "codes": codes, "counts": counts, "connections": placed}
