"""CheckAndConsume, its batch and Reserve: validation, the hot path, and the runner's path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from creditgate.domain import requests as check
from creditgate.domain.errors import CreditgateError, InvalidArgumentError, UnavailableError
from creditgate.domain.recurring import REQUEST_PREFIX as RECURRING
from creditgate.domain.results import Decision, Reason
from creditgate.driver.failures import FAILURES, failure

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from creditgate.domain.catalog import Plan
    from creditgate.driver.pipelined import HotPath
    from creditgate.engine.calls.consume import ConsumeCall, ConsumeCalls
    from creditgate.engine.runner import Runner

__all__ = ["BatchItem", "QuotaOps"]

# account, action, quantity, attributes, request id, dry run
BatchItem = tuple[str, str, int, dict[str, str], str, bool]


class QuotaOps:
    """Charges and holds. Every input is validated before Redis is touched."""

    def __init__(
        self,
        runner: Runner,
        calls: ConsumeCalls,
        fast: HotPath | None,
        *,
        require_request_id: bool,
    ) -> None:
        self.runner = runner
        self.calls = calls
        self.fast = fast
        self.require_request_id = require_request_id

    def request_id(self, given: str, *, dry_run: bool = False) -> str:
        """The id a charge runs under: ``given``, or a new one (none when ids are required).

        The transport returns it to the caller before the charge is made, so that a call whose
        outcome is unknown can be retried under the same id. A dry run changes nothing, so it
        gets a new id even when ids are required.
        """
        if given or (self.require_request_id and not dry_run):
            return given
        return check.new_id()

    def check_request_id(self, value: str, field: str, *, dry_run: bool = False) -> str:
        """A charge's id; with ``require_request_id`` an empty one is refused (not a dry run's)."""
        if not value and self.require_request_id and not dry_run:
            msg = (
                f"{field} is required: this server runs with CREDITGATE_REQUIRE_REQUEST_ID=true; "
                "send a unique id for each charge and the same id when retrying it"
            )
            raise InvalidArgumentError(msg)
        if value.startswith(RECURRING):
            msg = (
                f"{field} {value[:40]!r}: ids starting with {RECURRING!r} are the ids of recurring "
                "charges; choose another"
            )
            raise InvalidArgumentError(msg)
        return check.check_id(value, field, generate=True)

    async def consume(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        request_id: str = "",
        *,
        dry_run: bool = False,
        hold_ttl_ms: int | None = None,
    ) -> Decision:
        """CheckAndConsume; with ``hold_ttl_ms`` a Reserve (the credits are held, not spent)."""
        call = self.prepare(
            account_id,
            action,
            quantity,
            attributes,
            request_id,
            dry_run=dry_run,
            hold_ttl_ms=hold_ttl_ms,
        )
        if isinstance(call, Decision):  # an unknown action, on an account that must exist
            await self.runner.require_account(account_id)
            return call
        plan, reply = await self._reply(call)
        return call.result(plan, reply)

    async def reserve(  # noqa: PLR0913, PLR0917 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        reservation_id: str = "",
        ttl_seconds: int = 0,
        *,
        dry_run: bool = False,
    ) -> Decision:
        """Reserve: hold the cost until Settle or Release, or until the hold expires."""
        ctx = self.calls.ctx
        ttl_ms = check.hold_ttl_ms(ttl_seconds, ctx.idempotency_ttl_ms, ctx.hold_ttl_ms)
        return await self.consume(
            account_id,
            action,
            quantity,
            attributes,
            reservation_id,
            dry_run=dry_run,
            hold_ttl_ms=ttl_ms,
        )

    def prepare(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int,
        attributes: Mapping[str, str],
        request_id: str,
        *,
        dry_run: bool,
        hold_ttl_ms: int | None,
    ) -> ConsumeCall | Decision:
        """Validate a CheckAndConsume/Reserve; an unknown action is answered here (a denial).

        The checks run in the order of the message's fields, so the first wrong field is the
        one reported. A shape seen before skips the checks it already passed.
        """
        check.check_id(account_id, "account_id")
        field = "reservation_id" if hold_ttl_ms is not None else "request_id"
        rid = self.check_request_id(request_id, field, dry_run=dry_run)
        shape = self.calls.shape(
            action, quantity, attributes, dry_run=dry_run, hold_ttl_ms=hold_ttl_ms
        )
        if not shape.known:
            return check.unknown_action(action, rid)
        return self.calls.call(account_id, rid, shape)

    async def _reply(self, call: ConsumeCall) -> tuple[Plan, list[Any]]:
        """The consume script's reply: over the pipelined connection when the plan is known."""
        if self.fast is not None:
            plan = self.runner.known_plan(call.account_id)
            if plan is not None:
                reply = await self._fast(call, plan)
                if reply is not None:
                    return plan, reply
        plan, reply = await self.runner.run(call)
        assert plan is not None  # noqa: S101 - a consume call is always priced
        return plan, reply

    async def _fast(self, call: ConsumeCall, plan: Plan) -> list[Any] | None:
        """Run the consume script over the pipelined connection.

        None sends the call down the runner's path: an unknown plan or account, NOSCRIPT after
        a Redis restart, any other error reply.
        """
        assert self.fast is not None  # noqa: S101 - checked by the caller
        try:
            reply = await self.fast.call(call.resp(plan), *call.group(plan))
        except FAILURES as exc:
            raise failure(exc, sent=False) from exc
        if not isinstance(reply, list) or reply[0] in (b"PLAN", b"NO_ACCOUNT"):
            return None
        return reply

    async def consume_many(self, requests: Sequence[BatchItem]) -> list[Decision | CreditgateError]:
        """Independent CheckAndConsume decisions in one Redis pipeline (one round trip).

        Each is its own atomic script call; a request that fails gets its error in its slot, but
        an unreachable Redis fails the whole batch. Accounts whose plan this sidecar has not
        seen yet go through consume() one by one.
        """
        out, queued = self._prepare_batch(requests)
        replies = await self._send_batch(queued)
        for (i, call, plan), reply in zip(queued, replies, strict=True):
            if isinstance(reply, list) and reply[0] not in (b"PLAN", b"NO_ACCOUNT"):
                out[i] = _or_error(call, plan, reply)
        for i, slot in enumerate(out):
            if slot is None:  # plan not known here yet, or an error reply: one by one
                out[i] = await self._consume_or_error(requests[i])
            elif isinstance(slot, Decision) and slot.reason is Reason.UNKNOWN_ACTION:
                out[i] = await self._account_or_error(requests[i][0], slot)
        return [r for r in out if r is not None]

    def _prepare_batch(
        self, requests: Sequence[BatchItem]
    ) -> tuple[list[Decision | CreditgateError | None], list[tuple[int, ConsumeCall, Plan]]]:
        """Validate every item; queue those whose account's plan this sidecar knows."""
        out: list[Decision | CreditgateError | None] = [None] * len(requests)
        queued: list[tuple[int, ConsumeCall, Plan]] = []
        for i, (account_id, action, quantity, attributes, rid, dry_run) in enumerate(requests):
            try:
                call = self.prepare(
                    account_id, action, quantity, attributes, rid, dry_run=dry_run, hold_ttl_ms=None
                )
            except CreditgateError as exc:
                out[i] = exc
                continue
            if isinstance(call, Decision):
                out[i] = call
                continue
            plan = self.runner.known_plan(account_id)
            if plan is not None:
                queued.append((i, call, plan))
        return out, queued

    async def _send_batch(self, queued: list[tuple[int, ConsumeCall, Plan]]) -> list[Any]:
        """Send the queued items in one round trip.

        That is the fast connection's single write, or a redis-py pipeline. An unreachable Redis
        fails the whole batch.
        """
        if not queued:
            return []
        if self.fast is not None:
            try:
                return await self.fast.call_many(
                    [c.resp(p) for _, c, p in queued], [c.group(p) for _, c, p in queued]
                )
            except FAILURES as exc:
                raise failure(exc, sent=False) from exc
        runner = self.runner
        pipe = runner.redis.pipeline(transaction=False)
        for _, call, plan in queued:
            await runner.scripts.consume(keys=call.keys(), args=call.argv(plan), client=pipe)
        return await runner.execute(pipe)

    async def _account_or_error(self, account_id: str, d: Decision) -> Decision | CreditgateError:
        """An unknown action's denial, or NOT_FOUND when the account does not exist either."""
        try:
            await self.runner.require_account(account_id)
        except UnavailableError:
            raise  # Redis is gone for the whole batch
        except CreditgateError as exc:
            return exc
        return d

    async def _consume_or_error(self, item: BatchItem) -> Decision | CreditgateError:
        account_id, action, quantity, attributes, request_id, dry_run = item
        try:
            return await self.consume(
                account_id, action, quantity, attributes, request_id, dry_run=dry_run
            )
        except UnavailableError:
            raise  # Redis is gone for the whole batch, not for one request
        except CreditgateError as exc:
            return exc


def _or_error(call: ConsumeCall, plan: Plan, reply: list[Any]) -> Decision | CreditgateError:
    try:
        return call.result(plan, reply)
    except CreditgateError as exc:
        return exc
