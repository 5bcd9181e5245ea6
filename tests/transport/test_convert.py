"""The hot path's answer built straight from the script's reply equals the general conversion.

CheckAndConsume turns an allowed reply into its protobuf message without the domain values in
between (``convert.allowed_decision``); every other answer goes through ``replies.decision`` and
``convert.decision``. Here every plan and action of the demo catalog is charged for real, and
each allowed reply is converted both ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from creditgate.engine import Engine, replies
from creditgate.transport import convert

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from creditgate.domain.catalog import Catalog, Plan
    from creditgate.domain.results import Decision
    from creditgate.v1 import quota_pb2

ATTRIBUTES = (
    {},
    {"model": "pro", "feature": "agents"},
    {"model": "light", "feature": "chat"},
    {"model": "light"},
)


async def test_allowed_replies_convert_alike(redis: Redis, demo_catalog: Catalog) -> None:
    engine = Engine(redis, demo_catalog, test_clock=True)
    compared: list[str] = []

    def both(
        plan: Plan,
        reply: list[Any],
        request_id: str,
        meter: str,
        dry_run: bool,  # noqa: FBT001
    ) -> quota_pb2.Decision:
        fast = convert.allowed_decision(plan, reply, request_id, meter, dry_run)
        general = convert.decision(
            replies.decision(plan, reply, request_id, meter, dry_run=dry_run)
        )
        assert fast == general
        assert fast.SerializeToString(deterministic=True) == general.SerializeToString(
            deterministic=True
        )
        compared.append(f"{plan.id}/{len(fast.debits)}")
        return fast

    denied: list[Decision] = []
    for plan in demo_catalog.plans.values():
        account = f"conv-{plan.id}"
        await engine.create_account(account, plan.id)
        await engine.advance_clock(account, to_ms=1_800_000_000_000)
        for pool in plan.pools:
            if pool.kind == "grant":
                await engine.grant(account, pool.id, 5_000_000_000, f"g-{pool.id}")
            if pool.kind in ("overage", "payg"):
                await engine.set_pool_settings(account, pool.id, enabled=True)
        for action in sorted(plan.actions):
            for attributes in ATTRIBUTES:
                for quantity, dry_run in ((1, True), (3, False), (40, False)):
                    await engine.consume_as(
                        both, denied.append, account, action, quantity, attributes, dry_run=dry_run
                    )
    # Every plan answered allowed at least once, with single- and multi-pool charges among them.
    assert {c.split("/")[0] for c in compared} == set(demo_catalog.plans)
    assert len(compared) > 200
    assert {c.split("/")[1] for c in compared} >= {"0", "1", "2"}
    assert denied, "some charges are expected to be refused (caps, scopes)"
