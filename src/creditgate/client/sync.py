"""The blocking client: the asyncio client run on a private event loop, same calls.

with Client("127.0.0.1:50051") as client:
decision = client.check("acct-1", "agent.message")
with client.reserve("acct-1", "shingle.llm", 2000) as hold:
hold.settle(1532)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Self

from creditgate.client.aio import AsyncClient, Hold

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping

    from creditgate.client.results import Decision, Settlement
    from creditgate.v1 import credits_pb2, quota_pb2

__all__ = ["Client", "SyncHold"]


class Client:
    """``AsyncClient``'s calls, blocking; one per thread (it owns its event loop)."""

    def __init__(self, target: str, **options: Any) -> None:  # noqa: ANN401 - AsyncClient's
        self._loop = asyncio.new_event_loop()
        self._aio: AsyncClient = self._run(_make(target, options))

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:  # noqa: ANN401 - the coroutine's
        return self._loop.run_until_complete(coroutine)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._aio.close())
        self._loop.close()

    def check(  # noqa: PLR0913 - mirrors the request message
        self,
        account_id: str,
        action: str,
        quantity: int = 1,
        attributes: Mapping[str, str] | None = None,
        *,
        request_id: str = "",
        dry_run: bool = False,
    ) -> Decision:
        result: Decision = self._run(
            self._aio.check(
                account_id, action, quantity, attributes, request_id=request_id, dry_run=dry_run
            )
        )
        return result

    def reserve(
        self,
        account_id: str,
        action: str,
        estimate: int,
        attributes: Mapping[str, str] | None = None,
        **options: Any,  # noqa: ANN401 - reservation_id, ttl_seconds
    ) -> SyncHold:
        return SyncHold(
            self, self._aio.reserve(account_id, action, estimate, attributes, **options)
        )

    def balance(self, account_id: str) -> quota_pb2.GetBalanceResponse:
        result: quota_pb2.GetBalanceResponse = self._run(self._aio.balance(account_id))
        return result

    def credits_view(self, account_id: str, pool_id: str = "") -> credits_pb2.GetCreditsResponse:
        result: credits_pb2.GetCreditsResponse = self._run(
            self._aio.credits_view(account_id, pool_id)
        )
        return result

    def transactions(
        self,
        account_id: str,
        pool_id: str = "",
        **page: Any,  # noqa: ANN401 - limit, cursor
    ) -> credits_pb2.ListTransactionsResponse:
        result: credits_pb2.ListTransactionsResponse = self._run(
            self._aio.transactions(account_id, pool_id, **page)
        )
        return result

    def usage(self, account_id: str, **period: str) -> credits_pb2.GetUsageResponse:
        result: credits_pb2.GetUsageResponse = self._run(self._aio.usage(account_id, **period))
        return result


class SyncHold:
    """``Hold``, blocking."""

    def __init__(self, client: Client, hold: Hold) -> None:
        self._client = client
        self.hold = hold

    def __enter__(self) -> Self:
        self._client._run(self.hold.__aenter__())  # noqa: SLF001 - the client's own loop
        return self

    def settle(self, quantity: int) -> Settlement:
        result: Settlement = self._client._run(self.hold.settle(quantity))  # noqa: SLF001
        return result

    def release(self) -> None:
        self._client._run(self.hold.release())  # noqa: SLF001

    def __exit__(self, *exc: object) -> None:
        self._client._run(self.hold.__aexit__(None, None, None))  # noqa: SLF001


async def _make(target: str, options: dict[str, Any]) -> AsyncClient:
    """The async client, made inside the loop it will run on (grpc.aio binds its channel)."""
    return AsyncClient(target, **options)
