"""LLM calls through a real Envoy 1.40: reserve on the request, settle when the stream is done.

Each test runs on both bootstraps. deploy/envoy/llm.yaml asks creditgate twice per request in
domain ``llm`` (examples/demo.yaml): ``phase=reserve`` with the estimate (``x-max-tokens``) when
the request comes in, and ``phase=settle`` with the app's ``x-usage-tokens`` (through dynamic
metadata) when the stream is done. deploy/envoy/llm_ext_authz.yaml reserves with ext_authz (the
route ``/v1/llm/`` holds) and settles the same way. The accounts are ``shingle_free``: a
``tokens`` allowance of 100,000 and a USD balance of 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest_asyncio
from prometheus_client import REGISTRY

from creditgate.ledger.consumer import LedgerConsumer
from creditgate.ledger.open import open_ledger
from creditgate.ledger.reconcile import Reconciler
from creditgate.worker.worker import Worker
from envoy_kit import LLM, LLM_EXT_AUTHZ, MICRO, Response, Stack, ask, get, open_stack, validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import pytest

    from creditgate.domain.catalog import Catalog

ALLOWANCE = 100_000
POLL_SECONDS = 0.02
POLLS = 250  # 5 s: the stream-done call comes after the answer


REFUSED = {LLM: 429, LLM_EXT_AUTHZ: 402}  # out of tokens: the rate-limit filter's, ext_authz's
# Whether a refused request still makes a stream-done call (which then names no hold it made:
# not_held): after ext_authz's own refusal the rate-limit filter never saw the request.
DONE_CALL_WHEN_REFUSED = {LLM: 1, LLM_EXT_AUTHZ: 0}
PATH = "/v1/llm/chat"


@pytest_asyncio.fixture(scope="module", params=[LLM, LLM_EXT_AUTHZ], ids=["ratelimit", "ext_authz"])
async def stack(
    redis_url: str,
    demo_catalog: Catalog,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    source = request.param
    async with open_stack(redis_url, demo_catalog, tmp_path_factory.mktemp("llm"), source) as built:
        yield built


async def _call(stack: Stack, headers: dict[str, str]) -> Response:
    return await get(stack.envoy.port, headers, PATH)


def _id(stack: Stack, name: str) -> str:
    """An account of this bootstrap's run (the Redis is shared by both)."""
    return f"{name}-{stack.envoy.source.stem}"


def _ask(account: str, estimate: int | None = None, **more: str) -> dict[str, str]:
    return ask(account, estimate, "x-max-tokens", **more)


async def _tokens(stack: Stack, account: str) -> int:
    """What the tokens allowance holds now, in whole tokens."""
    state = await stack.engine.balance(account)
    return next(p.balance for p in state.pools if p.pool_id == "tokens") // MICRO


async def _settled_to(stack: Stack, account: str, expected: int) -> int:
    """The tokens left once the stream-done call has landed (it comes after the answer)."""
    for _ in range(POLLS):
        left = await _tokens(stack, account)
        if left == expected:
            break
        await asyncio.sleep(POLL_SECONDS)
    return left


def _holds(outcome: str) -> float:
    """creditgate_gateway_holds_total of the rate-limit service for ``outcome``."""
    return (
        REGISTRY.get_sample_value(
            "creditgate_gateway_holds_total", {"rpc": "ratelimit", "outcome": outcome}
        )
        or 0.0
    )


async def _holds_reach(outcome: str, count: float) -> float:
    """The count of ``outcome`` once it reaches ``count`` (stream-done calls come after)."""
    for _ in range(POLLS):
        if _holds(outcome) >= count:
            break
        await asyncio.sleep(POLL_SECONDS)
    return _holds(outcome)


async def _account(stack: Stack, account: str) -> None:
    await stack.engine.create_account(account, "shingle_free")


def test_the_llm_bootstraps_validate() -> None:
    for source in (LLM, LLM_EXT_AUTHZ):
        done = validate(source)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_the_estimate_is_held_while_the_app_answers_then_settled_to_the_usage(
    stack: Stack, tmp_path: Path
) -> None:
    """5,000 held on the request; the app used 1,234; 1,234 charged, and the ledger agrees."""
    acct = _id(stack, "llm-one")
    await _account(stack, acct)
    stack.upstream.gate = asyncio.Event()
    try:
        arrived = stack.upstream.arrived
        call = asyncio.create_task(_call(stack, _ask(acct, 5000, **{"x-test-usage": "1234"})))
        for _ in range(POLLS):
            if stack.upstream.arrived > arrived:
                break
            await asyncio.sleep(POLL_SECONDS)
        assert await _tokens(stack, acct) == ALLOWANCE - 5000  # held while the app works
    finally:
        stack.upstream.gate.set()
        stack.upstream.gate = None
    answer = await call
    assert answer.status == 200, answer
    assert answer.headers["x-usage-tokens"] == "1234"
    assert answer.headers["ratelimit-remaining"] == str(ALLOWANCE - 5000)
    assert await _settled_to(stack, acct, ALLOWANCE - 1234) == ALLOWANCE - 1234

    store = await open_ledger(f"sqlite:///{tmp_path}/ledger.db", migrate=True)
    try:
        worker = Worker(
            stack.engine.redis, LedgerConsumer(store), stack.engine.keys, block_ms=0, batch=500
        )
        await worker.drain()
        assert await Reconciler(stack.engine.redis, store, stack.engine.keys).diff(acct) == []
        sums = await store.movement_sums(acct)
        assert sums["tokens"] == (ALLOWANCE - 1234) * MICRO
    finally:
        with contextlib.suppress(Exception):
            await store.close()


async def test_without_an_estimate_the_default_is_held(stack: Stack) -> None:
    """No x-max-tokens: the domain's default_estimate (4,096) is held, then 10 charged."""
    acct = _id(stack, "llm-default")
    await _account(stack, acct)
    answer = await _call(stack, _ask(acct, **{"x-test-usage": "10"}))
    assert answer.status == 200, answer
    assert answer.headers["ratelimit-remaining"] == str(ALLOWANCE - 4096)
    assert await _settled_to(stack, acct, ALLOWANCE - 10) == ALLOWANCE - 10


async def test_an_estimate_above_what_is_left_is_refused_and_nothing_is_held(
    stack: Stack,
) -> None:
    acct = _id(stack, "llm-big")
    await _account(stack, acct)
    missing = _holds("not_held")
    answer = await _call(stack, _ask(acct, ALLOWANCE + 1, **{"x-test-usage": "1"}))
    assert answer.status == REFUSED[stack.envoy.source], answer
    assert answer.headers["x-creditgate-reason"] == "INSUFFICIENT_CREDITS"
    late = missing + DONE_CALL_WHEN_REFUSED[stack.envoy.source]
    assert await _holds_reach("not_held", late) == late  # no hold to settle
    assert await _tokens(stack, acct) == ALLOWANCE


async def test_200_concurrent_calls_never_overspend(stack: Stack) -> None:
    """Each holds 1,000 of 100,000 and uses 1,000: exactly 100 reach the app, 100,000 charged.

    Charging after the response (Envoy AI Gateway's apply_on_stream_done alone) would let all
    200 through and overspend by 100,000 (envoyproxy/ai-gateway#680).
    """
    acct = _id(stack, "llm-hot")
    await _account(stack, acct)
    seen = len(stack.upstream.seen)
    settled, missing = _holds("settled"), _holds("not_held")
    answers = await asyncio.gather(
        *(_call(stack, _ask(acct, 1000, **{"x-test-usage": "1000"})) for _ in range(200))
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 100 + [REFUSED[stack.envoy.source]] * 100
    assert len(stack.upstream.seen) - seen == 100
    # Every stream-done call lands: 100 holds settled; the refused requests have none to settle.
    assert await _holds_reach("settled", settled + 100) == settled + 100
    late = missing + 100 * DONE_CALL_WHEN_REFUSED[stack.envoy.source]
    assert await _holds_reach("not_held", late) == late
    assert await _tokens(stack, acct) == 0


async def test_a_stream_cut_short_is_settled_at_the_estimate(stack: Stack) -> None:
    """The app closes mid-body, reporting no usage: the hold is settled at its estimate.

    (hold.without_usage: charge_estimate, the demo's.) The balance is the same held or
    settled, so the settlement is read off creditgate_gateway_holds_total.
    """
    acct = _id(stack, "llm-cut")
    await _account(stack, acct)
    settled = _holds("settled")
    answer = await _call(stack, _ask(acct, 700, **{"x-test-cut": "1"}))
    assert answer.status == 200  # the headers went out before the stream was cut
    assert await _holds_reach("settled", settled + 1) == settled + 1
    assert await _tokens(stack, acct) == ALLOWANCE - 700


async def test_a_request_id_used_again_never_runs_the_app_for_free(stack: Stack) -> None:
    """The same x-request-id after its hold was settled: refused, the app is not reached."""
    acct = _id(stack, "llm-again")
    await _account(stack, acct)
    headers = _ask(acct, 100, **{"x-test-usage": "60"})
    assert (await _call(stack, headers)).status == 200
    assert await _settled_to(stack, acct, ALLOWANCE - 60) == ALLOWANCE - 60
    seen = len(stack.upstream.seen)
    again = await _call(stack, headers)
    assert again.status == {LLM: 429, LLM_EXT_AUTHZ: 409}[stack.envoy.source], again
    assert again.headers["x-creditgate-reason"] == "DUPLICATE_REQUEST_ID"
    assert len(stack.upstream.seen) == seen
    assert await _tokens(stack, acct) == ALLOWANCE - 60


async def test_a_duplicate_refused_mid_stream_cannot_settle_the_hold(stack: Stack) -> None:
    """B reuses A's id while A's app works: B is refused, and A alone settles A's hold.

    B's stream-done call names no hold it made (no ``held`` entry), so A's hold is settled at
    A's usage, not at B's estimate.
    """
    acct = _id(stack, "llm-dup")
    await _account(stack, acct)
    headers = _ask(acct, 5000, **{"x-test-usage": "1234"})
    not_held = _holds("not_held")
    stack.upstream.gate = asyncio.Event()
    try:
        arrived = stack.upstream.arrived
        first = asyncio.create_task(_call(stack, headers))
        for _ in range(POLLS):
            if stack.upstream.arrived > arrived:
                break
            await asyncio.sleep(POLL_SECONDS)
        again = await _call(stack, headers)
        assert again.headers["x-creditgate-reason"] == "DUPLICATE_REQUEST_ID"
        late = not_held + DONE_CALL_WHEN_REFUSED[stack.envoy.source]
        assert await _holds_reach("not_held", late) == late
        assert await _tokens(stack, acct) == ALLOWANCE - 5000  # still held for A
    finally:
        stack.upstream.gate.set()
        stack.upstream.gate = None
    assert (await first).status == 200
    assert await _settled_to(stack, acct, ALLOWANCE - 1234) == ALLOWANCE - 1234


async def test_a_usage_that_is_not_a_count_is_settled_at_the_estimate(stack: Stack) -> None:
    """The app answers ``x-usage-tokens: abc``: the hold is charged its estimate, counted."""
    acct = _id(stack, "llm-bad")
    await _account(stack, acct)
    bad = _holds("bad_usage")
    answer = await _call(stack, _ask(acct, 300, **{"x-test-usage": "abc"}))
    assert answer.status == 200
    assert await _holds_reach("bad_usage", bad + 1) == bad + 1
    assert await _tokens(stack, acct) == ALLOWANCE - 300
