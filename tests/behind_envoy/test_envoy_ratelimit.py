"""HTTP through a real Envoy 1.40 whose rate-limit filter asks creditgate (deploy/envoy).

Each test uses its own accounts on the module's stack; the failure tests build their own.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from envoy_kit import BOOTSTRAP, MICRO, ask, get, validate

if TYPE_CHECKING:
    from envoy_kit import Stack


def test_the_deployed_bootstrap_validates() -> None:
    """deploy/envoy/ratelimit.yaml is a configuration Envoy 1.40 accepts as it is."""
    done = validate(BOOTSTRAP)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"configuration '{BOOTSTRAP}' OK" in done.stdout


async def test_allowed_reaches_the_upstream_with_the_ratelimit_headers(stack: Stack) -> None:
    """One unit of 5: 200 from the upstream; 5 before, 4 left, and the charge's id passed on."""
    await stack.account("env-ok", 5)
    headers = ask("env-ok")
    answer = await get(stack.envoy.port, headers)
    assert answer.status == 200, answer
    assert answer.body == b"ok"
    assert answer.headers["ratelimit-limit"] == "5"
    assert answer.headers["ratelimit-remaining"] == "4"
    assert answer.headers["ratelimit-reset"] == "0"
    assert answer.headers["x-creditgate-reason"] == "ALLOWED"
    assert answer.headers["x-creditgate-request-id"] == headers["x-request-id"]
    assert headers["x-request-id"] in stack.upstream.seen
    assert await stack.bonus("env-ok") == 4 * MICRO


async def test_out_of_credits_is_429_with_a_json_body(stack: Stack) -> None:
    """Nothing left: Envoy answers 429 itself with creditgate's JSON body; nothing is taken."""
    await stack.account("env-empty", 1)
    answer = await get(stack.envoy.port, ask("env-empty", 2))
    assert answer.status == 429, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-creditgate-reason"] == "INSUFFICIENT_CREDITS"
    assert answer.headers["ratelimit-remaining"] == "1"  # 2 asked, 1 short
    body = json.loads(answer.body)
    assert body["reason"] == "INSUFFICIENT_CREDITS"
    assert body["message"].startswith("agent.message: ")
    assert body["retry_at"] is None  # bonus credits never renew by themselves
    assert await stack.bonus("env-empty") == 1 * MICRO


async def test_cost_per_request_3_3_2_1_on_5_units(stack: Stack) -> None:
    """hits_addend 3, 3, 2, 1 on 5 units: 200, 429, 200, 429, and exactly 5 units charged."""
    await stack.account("env-cost", 5)
    statuses = [
        (await get(stack.envoy.port, ask("env-cost", cost))).status for cost in (3, 3, 2, 1)
    ]
    assert statuses == [200, 429, 200, 429]
    assert await stack.bonus("env-cost") == 0


async def test_a_request_id_used_again_is_refused_and_charged_once(stack: Stack) -> None:
    """Envoy passes a client's x-request-id on: sent again, it is refused, not run for free."""
    await stack.account("env-retry", 5)
    headers = ask("env-retry", 2)
    seen = len(stack.upstream.seen)
    first = await get(stack.envoy.port, headers)
    again = await get(stack.envoy.port, headers)
    assert (first.status, again.status) == (200, 429)
    assert again.headers["x-creditgate-reason"] == "DUPLICATE_REQUEST_ID"
    assert len(stack.upstream.seen) == seen + 1
    assert await stack.bonus("env-retry") == 3 * MICRO


async def test_200_concurrent_requests_pass_exactly_the_affordable(stack: Stack) -> None:
    """37 units, 200 requests at once through Envoy: exactly 37 reach the upstream."""
    await stack.account("env-hot", 37)
    before = len(stack.upstream.seen)
    answers = await asyncio.gather(*(get(stack.envoy.port, ask("env-hot")) for _ in range(200)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 37 + [429] * 163
    assert len(stack.upstream.seen) - before == 37
    assert await stack.bonus("env-hot") == 0


async def test_a_request_without_an_account_is_refused_not_let_through(stack: Stack) -> None:
    """No x-account-id: the descriptor has no account entry; 429 says so, the app never sees it."""
    before = len(stack.upstream.seen)
    answer = await get(stack.envoy.port, {"x-creditgate-cost": "1"})
    assert answer.status == 429
    assert json.loads(answer.body)["reason"] == "NO_ACCOUNT"
    assert answer.headers["x-creditgate-reason"] == "NO_ACCOUNT"
    assert len(stack.upstream.seen) == before


async def test_attributes_and_the_action_come_from_headers(stack: Stack) -> None:
    """x-model pro prices agent.message at 3 credits a unit: 2 units of pro take 6 of 10."""
    await stack.account("env-pro", 10)
    answer = await get(stack.envoy.port, ask("env-pro", 2, **{"x-model": "pro"}))
    assert answer.status == 200
    assert await stack.bonus("env-pro") == 4 * MICRO
    answer = await get(stack.envoy.port, ask("env-pro", 1, **{"x-creditgate-action": "nope"}))
    assert answer.status == 429
    assert answer.headers["x-creditgate-reason"] == "UNKNOWN_ACTION"
