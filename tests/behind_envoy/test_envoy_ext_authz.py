"""HTTP through a real Envoy 1.40 whose ext_authz filter asks creditgate (deploy/envoy).

The bootstrap is deploy/envoy/ext_authz.yaml; the mapping the demo catalog's
gateway.envoy_ext_authz. Each test uses its own accounts on the module's stack.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest_asyncio

from envoy_kit import EXT_AUTHZ, MICRO, ask, get, open_stack, validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from creditgate.domain.catalog import Catalog
    from envoy_kit import Stack


@pytest_asyncio.fixture(scope="module")
async def authz(
    redis_url: str, demo_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("envoy-authz")
    async with open_stack(redis_url, demo_catalog, workdir, EXT_AUTHZ) as built:
        yield built


def test_the_deployed_bootstrap_validates() -> None:
    """deploy/envoy/ext_authz.yaml is a configuration Envoy 1.40 accepts as it is."""
    done = validate(EXT_AUTHZ)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"configuration '{EXT_AUTHZ}' OK" in done.stdout


async def test_allowed_is_200_with_headers_both_ways(authz: Stack) -> None:
    """One unit of 5: 200 from the upstream, which gets the id; the client gets what is left."""
    await authz.account("az-env-ok", 5)
    headers = ask("az-env-ok", **{"x-creditgate-request-id": "forged"})
    answer = await get(authz.envoy.port, headers)
    assert answer.status == 200, answer
    assert answer.body == b"ok"
    assert answer.headers["ratelimit-limit"] == "5"
    assert answer.headers["ratelimit-remaining"] == "4"
    assert answer.headers["x-creditgate-reason"] == "ALLOWED"
    assert answer.headers["x-creditgate-request-id"] == headers["x-request-id"]
    assert authz.upstream.seen[-1] == headers["x-request-id"]  # the client's own was overwritten
    assert await authz.bonus("az-env-ok") == 4 * MICRO
    # The filter's dynamic metadata reaches the access log (flushed within a second or so).
    line = f"creditgate_request_id={headers['x-request-id']}"
    for _ in range(100):  # at most 10 s
        if line in authz.envoy.log.read_text():
            break
        await asyncio.sleep(0.1)
    assert line in authz.envoy.log.read_text()


async def test_out_of_credits_is_402_json(authz: Stack) -> None:
    """2 asked, 1 held: Envoy answers 402 with creditgate's body; the app never sees it."""
    await authz.account("az-env-402", 1)
    before = len(authz.upstream.seen)
    answer = await get(authz.envoy.port, ask("az-env-402", 2))
    assert answer.status == 402, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["ratelimit-remaining"] == "1"
    body = json.loads(answer.body)
    assert body["reason"] == "INSUFFICIENT_CREDITS"
    assert body["message"].startswith("agent.message: ")
    assert len(authz.upstream.seen) == before
    assert await authz.bonus("az-env-402") == 1 * MICRO


async def test_no_account_and_not_entitled_are_403(authz: Stack) -> None:
    await authz.account("az-env-403", 5)
    before = len(authz.upstream.seen)
    none = await get(authz.envoy.port, {"x-creditgate-cost": "1"})
    assert (none.status, json.loads(none.body)["reason"]) == (403, "NO_ACCOUNT")
    glue = await get(authz.envoy.port, ask("az-env-403"), path="/v1/email")
    assert (glue.status, json.loads(glue.body)["reason"]) == (403, "NOT_ENTITLED")
    assert len(authz.upstream.seen) == before
    assert await authz.bonus("az-env-403") == 5 * MICRO


async def test_200_concurrent_requests_pass_exactly_the_affordable(authz: Stack) -> None:
    """37 units, 200 requests at once through Envoy: exactly 37 200s, the rest 402."""
    await authz.account("az-env-hot", 37)
    before = len(authz.upstream.seen)
    answers = await asyncio.gather(*(get(authz.envoy.port, ask("az-env-hot")) for _ in range(200)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 37 + [402] * 163
    assert len(authz.upstream.seen) - before == 37
    assert await authz.bonus("az-env-hot") == 0
