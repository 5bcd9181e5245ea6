"""The notifications' Python API: raise a notification, manage endpoints, read what was sent.

``Notifications.notify`` is how Python code (the auto top-up consumer) raises
``credit_auto_recharge_triggered`` and ``credit_purchase_failed``; the admin RPCs call the rest.
Every input is checked before anything is written (InvalidArgumentError names the field).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from creditgate.domain.errors import InvalidArgumentError
from creditgate.ledger.sql import SqlLedger
from creditgate.notify import message
from creditgate.notify.store import Endpoint, NewNotification, NotifyStore

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from creditgate.ledger.store import LedgerStore
    from creditgate.notify.store import Attempt, Notification

_LIMIT_MAX = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


class Notifications:
    def __init__(self, store: NotifyStore, on_new: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_new = on_new

    @classmethod
    def of(cls, ledger: LedgerStore | None) -> Notifications | None:
        """The notifications kept in ``ledger``'s database; None without a SQL ledger."""
        return cls(NotifyStore(ledger)) if isinstance(ledger, SqlLedger) else None

    async def notify(
        self,
        account: str,
        kind: str,
        data: dict[str, Any],
        notification_id: str,
        *,
        time_ms: int | None = None,
    ) -> bool:
        """Put one notification in the outbox; False if ``notification_id`` was raised before.

        ``data`` becomes the body's ``data`` (``account`` is added); integer ``balance``,
        ``threshold``, ``amount`` and ``cap`` are micro-units and gain a ``*_units`` decimal.
        """
        message.check_id(account, "account")
        message.check_kinds([kind])
        message.check_id(notification_id, "notification_id")
        when = _now_ms() if time_ms is None else time_ms
        payload = message.body(kind, when, {**data, "account": account})
        new = await self.store.enqueue(
            [NewNotification(notification_id, account, kind, "api", payload, when)]
        )
        if new and self.on_new is not None:
            self.on_new()
        return bool(new)

    # --- endpoints -----------------------------------------------------------------------

    async def create_endpoint(
        self, account: str, url: str, kinds: Sequence[str] = (), secret: str = ""
    ) -> Endpoint:
        """A new enabled endpoint (``account`` '' : global); its secret is generated if empty."""
        if account:
            message.check_id(account, "account")
        ep = Endpoint(
            endpoint_id="ep_" + os.urandom(8).hex(),
            account=account,
            url=message.check_url(url),
            secrets=(message.check_secret(secret) if secret else message.new_secret(),),
            kinds=message.check_kinds(kinds),
            enabled=True,
            disabled_reason="",
            created_ms=_now_ms(),
        )
        await self.store.add_endpoint(ep)
        return ep

    async def endpoints(self, account: str | None = None) -> list[Endpoint]:
        return await self.store.endpoints(account)

    async def rotate_secret(
        self, endpoint_id: str, secret: str = "", *, drop_previous: bool = False
    ) -> Endpoint:
        """Make ``secret`` (or a new one) the newest secret of an endpoint.

        The previous ones keep signing (up to ``MAX_SECRETS`` at once) until ``drop_previous``
        or a later rotation ends them.
        """
        new = message.check_secret(secret) if secret else message.new_secret()
        ep = await self.store.endpoint(message.check_id(endpoint_id, "endpoint_id"))
        if new in ep.secrets:
            msg = "that secret is already active on this endpoint; give a new one"
            raise InvalidArgumentError(msg)
        keep = () if drop_previous else ep.secrets[: message.MAX_SECRETS - 1]
        await self.store.set_secrets(endpoint_id, (new, *keep))
        return await self.store.endpoint(endpoint_id)

    async def set_enabled(self, endpoint_id: str, *, enabled: bool) -> Endpoint:
        message.check_id(endpoint_id, "endpoint_id")
        await self.store.set_enabled(endpoint_id, enabled=enabled, reason="disabled by an admin")
        return await self.store.endpoint(endpoint_id)

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.store.delete_endpoint(message.check_id(endpoint_id, "endpoint_id"))

    # --- reads ---------------------------------------------------------------------------

    async def sent(
        self, account: str, limit: int = 50, cursor: str = ""
    ) -> tuple[list[Notification], str | None]:
        message.check_id(account, "account")
        if not 1 <= limit <= _LIMIT_MAX:
            msg = f"limit {limit}: give 1-{_LIMIT_MAX}"
            raise InvalidArgumentError(msg)
        if cursor and not cursor.isdigit():
            msg = f"cursor {cursor!r}: pass back the next_cursor of the previous page"
            raise InvalidArgumentError(msg)
        return await self.store.notifications(account, limit, cursor or None)

    async def attempts(self, notification_id: str) -> list[Attempt]:
        return await self.store.attempts(notification_id)
