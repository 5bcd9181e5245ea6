"""``creditgate webhook ...`` and ``creditgate notifications`` against ``serve --embedded``.

A notice XADDed to the embedded Redis (in the format the Lua scripts write), and then notices
written by real charges made with ``creditgate check``, go through the worker process the
sidecar started, into the outbox and out to a local receiver that verifies their signatures;
the CLI then shows what was sent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from redis import Redis

from creditgate.engine.keys import KeySpace
from served_kit import Served, cli, run_cli, served
from webhook_kit import SECRET, Receiver, notice, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["served"]  # the module-scoped sidecar fixture


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver(secrets=[SECRET]))


def test_webhook_commands_and_a_notice_delivered(served: Served, receiver: Receiver) -> None:
    ep = cli(served.target, "webhook", "create", receiver.url, "--account", "acct-w",
             "--secret", SECRET)  # fmt: skip
    assert (ep["account_id"], ep["enabled"], ep["secrets"]) == ("acct-w", True, [SECRET])
    bad, listed = run_cli(
        served.target, [("webhook", "create", "ftp://h.test"), ("webhook", "list")]
    )
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT: url 'ftp://h.test': give an http:// or https:// URL" in bad.stderr
    assert listed.returncode == 0
    assert ep["endpoint_id"] in listed.stdout

    keys = KeySpace()
    with Redis(unix_socket_path=str(served.redis_socket)) as redis:
        redis.xadd(keys.stream(keys.shard_of("acct-w")), notice("acct-w", "credit_balance_low"))  # type: ignore[arg-type]
    for _ in range(200):
        if receiver.got:
            break
        time.sleep(0.05)
    [got] = receiver.got
    assert got.verified_by == [SECRET]
    assert got.body["data"]["balance_units"] == "4.99"

    sent = cli(served.target, "notifications", "acct-w")
    [n] = sent["notifications"]
    assert n["notification_id"] == got.webhook_id
    assert n["kind"] == "credit_balance_low"
    for _ in range(100):  # the dispatcher records the attempt right after the receiver answered
        if n["deliveries"][0]["state"] == "delivered":
            break
        time.sleep(0.05)
        [n] = cli(served.target, "notifications", "acct-w")["notifications"]
    assert n["deliveries"] == [
        {"endpoint_id": ep["endpoint_id"], "state": "delivered", "attempts": 1, "last_status": 200}
    ]
    text, rotated, missing = run_cli(served.target, [
        ("notifications", "acct-w"),
        ("webhook", "rotate", ep["endpoint_id"], "--json"),
        ("webhook", "delete", "ep_missing"),
    ])  # fmt: skip
    assert text.returncode == 0
    assert "credit_balance_low" in text.stdout
    assert "balance=4.99" in text.stdout
    assert "threshold=5" in text.stdout
    assert "payload" not in text.stdout  # the body is in --json only
    assert rotated.returncode == 0
    assert '"secret_count": 2' in rotated.stdout
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
    off = cli(served.target, "webhook", "disable", ep["endpoint_id"])
    assert off["enabled"] is False
    (deleted,) = run_cli(served.target, [("webhook", "delete", ep["endpoint_id"])])
    assert deleted.returncode == 0


def test_a_real_charge_crossing_the_threshold_is_delivered_signed(
    served: Served, receiver: Receiver
) -> None:
    """Seed 003 end to end: charges through the CLI cross $2 then $0; the receiver gets both.

    demo-shingle-free has $20 of balance and the plan's $2 low-balance threshold; SMS have no
    allowance and cost $0.05: 360 leave $2.00 (low), 40 more leave $0 (depleted).
    """
    cli(served.target, "webhook", "create", receiver.url, "--account", "demo-shingle-free",
        "--secret", SECRET)  # fmt: skip
    low, empty = run_cli(served.target, [
        ("check", "demo-shingle-free", "shingle.sms", "-q", "360", "--request-id", "sms-1"),
    ]) + run_cli(served.target, [
        ("check", "demo-shingle-free", "shingle.sms", "-q", "40", "--request-id", "sms-2"),
    ])  # fmt: skip
    assert (low.returncode, empty.returncode) == (0, 0), (low.stderr, empty.stderr)
    for _ in range(200):
        if len(receiver.got) >= 2:
            break
        time.sleep(0.05)
    got = [(r.body["type"], r.body["data"]["balance_units"], r.body["data"]["request_id"])
           for r in receiver.got]  # fmt: skip
    assert got == [("credit_balance_low", "2", "sms-1"), ("credit_balance_depleted", "0", "sms-2")]
    assert all(r.verified_by == [SECRET] for r in receiver.got)
    assert len({r.webhook_id for r in receiver.got}) == 2
