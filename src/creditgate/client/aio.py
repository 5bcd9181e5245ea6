"""The asyncio client: ``check``, ``reserve`` as a context manager, retried safely.

When the sidecar cannot reach Redis, ``check`` and ``reserve`` apply the action's
``on_unavailable`` from the plans file once the retries are spent: ``allow`` answers an allowed
``Decision`` with reason ``unavailable_allowed`` and nothing charged (a hold that holds nothing;
settling it charges nothing), ``deny`` (the default) raises the error.

Every charge carries a request id (the caller's, or a new one), so a call that failed with
UNAVAILABLE (nothing was done) or DEADLINE_EXCEEDED (it may have been done) is sent again under
the same id: the sidecar replays the first answer instead of charging twice. Retries back off
exponentially and stop at the call's deadline; other errors are raised at once.

    async with AsyncClient("127.0.0.1:50051", token=...) as client:
        decision = await client.check("acct-1", "agent.message", 3)
        async with client.reserve("acct-1", "shingle.llm", 2000) as hold:
            used = await run_llm()
            await hold.settle(used)   # a hold neither settled nor released is released on exit
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

import grpc

from creditgate.client.channel import ClientTLS, client_channel
from creditgate.client.results import UNBILLED, Amount, Decision, Settlement
from creditgate.domain.errors import ON_UNAVAILABLE_KEY
from creditgate.v1 import admin_pb2_grpc, credits_pb2, credits_pb2_grpc, quota_pb2, quota_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

    from google.protobuf.message import Message

__all__ = ["RETRIED", "AsyncClient", "Hold", "HoldRefusedError"]

log = logging.getLogger("creditgate.client")
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0


def new_id() -> str:
    return uuid.uuid4().hex


def let_through(exc: grpc.aio.AioRpcError, request_id: str) -> Decision:
    """An allowed Decision for a call the sidecar could not make without Redis.

    Only when the action's ``on_unavailable`` is ``allow``; else ``exc`` is raised again.
    """
    trailing: Any = exc.trailing_metadata() or ()
    said = next((str(v) for k, v in trailing if k == ON_UNAVAILABLE_KEY), None)
    if exc.code() not in RETRIED or said != "allow":
        raise exc
    log.warning("sidecar without Redis: %s let through unbilled (on_unavailable allow)", request_id)
    return Decision.unbilled(request_id)


class AsyncClient:
    """One channel to a sidecar. ``attempt_timeout``: each try; ``deadline``: all tries."""

    def __init__(
        self,
        target: str,
        *,
        token: str = "",
        tls: ClientTLS | None = None,
        attempt_timeout: float = 2.0,
        deadline: float = 10.0,
    ) -> None:
        self.target = target
        self._channel = client_channel(target, tls)
        self.quota = quota_pb2_grpc.QuotaServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.credits = credits_pb2_grpc.CreditsServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def call(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Message,
        *,
        idempotent: bool = True,
    ) -> Any:  # noqa: ANN401 - the method's response
        """``method(request)``, tried again on UNAVAILABLE and DEADLINE_EXCEEDED until the deadline.

        DEADLINE_EXCEEDED means the request may have been applied, so it is retried only when
        ``idempotent``: a request that carries its id (charges, grants) or changes nothing. Others
        (advancing a test clock by some seconds) are retried on UNAVAILABLE alone.
        """
        end = time.monotonic() + self.deadline
        backoff = _FIRST_BACKOFF_S
        while True:
            left = end - time.monotonic()
            try:
                return await method(
                    request,
                    timeout=min(self.attempt_timeout, max(left, 0.001)),
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as exc:
                pause = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto
                retried = RETRIED if idempotent else {grpc.StatusCode.UNAVAILABLE}
                if exc.code() not in retried or time.monotonic() + pause >= end:
                    raise
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def check(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int = 1,
        attributes: Mapping[str, str] | None = None,
        *,
        request_id: str = "",
        dry_run: bool = False,
    ) -> Decision:
        """May ``action`` run now? If so it is charged (``dry_run``: only answered)."""
        request = quota_pb2.CheckAndConsumeRequest(
            account_id=account_id,
            action=action,
            quantity=quantity,
            attributes=dict(attributes or {}),
            request_id=request_id or new_id(),
            dry_run=dry_run,
        )
        try:
            return Decision.of(await self.call(self.quota.CheckAndConsume, request))
        except grpc.aio.AioRpcError as exc:
            return let_through(exc, request.request_id)

    def reserve(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        estimate: int,
        attributes: Mapping[str, str] | None = None,
        *,
        reservation_id: str = "",
        ttl_seconds: int = 0,
    ) -> Hold:
        """A hold on ``estimate`` units, as an async context manager (see the module doc)."""
        request = quota_pb2.ReserveRequest(
            account_id=account_id,
            action=action,
            quantity=estimate,
            attributes=dict(attributes or {}),
            reservation_id=reservation_id or new_id(),
            ttl_seconds=ttl_seconds,
        )
        return Hold(self, request)

    async def balance(self, account_id: str) -> quota_pb2.GetBalanceResponse:
        request = quota_pb2.GetBalanceRequest(account_id=account_id)
        response: quota_pb2.GetBalanceResponse = await self.call(self.quota.GetBalance, request)
        return response

    async def credits_view(
        self, account_id: str, pool_id: str = ""
    ) -> credits_pb2.GetCreditsResponse:
        """Seed 003's Credits card, from the ledger (``ledger.lag_ms`` says how far behind)."""
        request = credits_pb2.GetCreditsRequest(account_id=account_id, pool_id=pool_id)
        response: credits_pb2.GetCreditsResponse = await self.call(self.credits.GetCredits, request)
        return response

    async def transactions(
        self, account_id: str, pool_id: str = "", *, limit: int = 0, cursor: str = ""
    ) -> credits_pb2.ListTransactionsResponse:
        """One page of movements, newest first; pass ``next_cursor`` back for the next."""
        request = credits_pb2.ListTransactionsRequest(
            account_id=account_id, pool_id=pool_id, limit=limit, cursor=cursor
        )
        response: credits_pb2.ListTransactionsResponse = await self.call(
            self.credits.ListTransactions, request
        )
        return response

    async def usage(
        self, account_id: str, *, month: str = "", from_day: str = "", to_day: str = ""
    ) -> credits_pb2.GetUsageResponse:
        """Usage by action and pool for a month (default: this one) or a range of days."""
        request = credits_pb2.GetUsageRequest(
            account_id=account_id, month=month, from_day=from_day, to_day=to_day
        )
        response: credits_pb2.GetUsageResponse = await self.call(self.credits.GetUsage, request)
        return response


class HoldRefusedError(Exception):
    """``reserve`` was denied; ``decision`` says why (a denial is not a failure of the call)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message or decision.reason)
        self.decision = decision


class Hold:
    """A reservation: entered, it holds; ``settle`` charges the actual, ``release`` drops it."""

    def __init__(self, client: AsyncClient, request: quota_pb2.ReserveRequest) -> None:
        self._client = client
        self._request = request
        self.decision: Decision | None = None
        self.done = False

    @property
    def reservation_id(self) -> str:
        return self._request.reservation_id

    async def __aenter__(self) -> Self:
        try:
            reply = await self._client.call(self._client.quota.Reserve, self._request)
            self.decision = Decision.of(reply)
        except grpc.aio.AioRpcError as exc:
            self.decision = let_through(exc, self.reservation_id)
            self.done = True  # nothing is held: nothing to settle or release
        if not self.decision.allowed:
            raise HoldRefusedError(self.decision)
        return self

    @property
    def unbilled(self) -> bool:
        """Let through without Redis: nothing is held, and settling charges nothing."""
        return self.decision is not None and self.decision.reason == UNBILLED

    async def settle(self, quantity: int) -> Settlement:
        """Charge ``quantity`` units against the hold; what it held beyond that goes back."""
        if self.unbilled:
            nothing = Amount(Decimal(0), "")
            return Settlement(nothing, nothing, fully_charged=False, message="unbilled")
        request = quota_pb2.SettleRequest(
            account_id=self._request.account_id,
            reservation_id=self.reservation_id,
            quantity=quantity,
        )
        response = await self._client.call(self._client.quota.Settle, request)
        self.done = True
        return Settlement.of(response)

    async def release(self) -> None:
        """Give everything held back."""
        request = quota_pb2.ReleaseRequest(
            account_id=self._request.account_id, reservation_id=self.reservation_id
        )
        try:
            await self._client.call(self._client.quota.Release, request)
        except grpc.aio.AioRpcError as exc:
            # A retried release whose first try got through: the hold is released already.
            released = "was released" in (exc.details() or "")
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or not released:
                raise
        self.done = True

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:
            await self.release()
