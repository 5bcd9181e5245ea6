"""What a notification is on the wire: the kinds, the JSON body, the signed headers.

The body follows Standard Webhooks: ``{"type", "timestamp", "data"}``, every amount twice, as a
string of integer micro-units of the pool's unit (``balance``) and as a decimal in that unit
(``balance_units``). The headers are ``webhook-id`` (the notification id, the same on every
retry), ``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body`` per active secret, space-separated, as
the ``standardwebhooks`` package computes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.money import format_micro
from creditgate.events.schema import NOTICE_KINDS, NOTIFY_ONLY_KINDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from creditgate.events.schema import Notice

ALL_KINDS = (*NOTICE_KINDS, *NOTIFY_ONLY_KINDS)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MAX_SECRETS = 3  # active at once: the newest and up to two it replaced
_SECRET_BYTES = (24, 64)
_URL_MAX = 2048
_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_AMOUNTS = ("balance", "threshold", "amount", "cap")


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def check_secret(secret: str) -> str:
    """A ``whsec_`` secret of 24-64 random bytes (base64), or InvalidArgumentError."""
    body = secret.removeprefix(SECRET_PREFIX)
    if body == secret:
        msg = f"secret must start with {SECRET_PREFIX!r} (leave it empty to have one generated)"
        raise InvalidArgumentError(msg)
    try:
        raw = base64.b64decode(body, validate=True)
    except ValueError:
        msg = "secret: the part after 'whsec_' must be base64"
        raise InvalidArgumentError(msg) from None
    if not _SECRET_BYTES[0] <= len(raw) <= _SECRET_BYTES[1]:
        msg = f"secret must hold {_SECRET_BYTES[0]}-{_SECRET_BYTES[1]} bytes, not {len(raw)}"
        raise InvalidArgumentError(msg)
    return secret


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        msg = f"url {url!r}: give an http:// or https:// URL with a host"
        raise InvalidArgumentError(msg)
    if len(url) > _URL_MAX:
        msg = f"url is {len(url)} characters; at most {_URL_MAX}"
        raise InvalidArgumentError(msg)
    return url


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    bad = [k for k in kinds if k not in ALL_KINDS]
    if bad:
        msg = f"unknown notification kind(s) {', '.join(bad)}; use {', '.join(ALL_KINDS)}"
        raise InvalidArgumentError(msg)
    return tuple(dict.fromkeys(kinds))


def check_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        msg = f"{what} {value!r}: use 1-128 of letters, digits and ._:@/+=-"
        raise InvalidArgumentError(msg)
    return value


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def body(kind: str, time_ms: int, data: dict[str, Any]) -> str:
    """The JSON body; integer amounts in ``data`` gain their ``*_units`` decimal form."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _AMOUNTS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
            out[f"{key}_units"] = format_micro(value)
        else:
            out[key] = value
    doc = {"type": kind, "timestamp": _iso(time_ms), "data": out}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def notice_body(n: Notice) -> str:
    data: dict[str, Any] = {
        "account": n.event.account,
        "pool": n.pool,
        "balance": n.balance,
        "request_id": n.event.request_id,
    }
    if n.threshold is not None:
        data["threshold"] = n.threshold
    return body(n.kind, n.event.time_ms, data)


def headers(
    notification_id: str, payload: str, secrets: Sequence[str], now_s: int
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every active secret."""
    when = dt.datetime.fromtimestamp(now_s, tz=dt.UTC)
    sigs = [Webhook(s).sign(notification_id, when, payload) for s in secrets]
    return {
        "webhook-id": notification_id,
        "webhook-timestamp": str(now_s),
        "webhook-signature": " ".join(sigs),
        "content-type": "application/json",
    }


def summary(payload: str) -> str:
    """One line for a person: ``data``'s fields, amounts as decimals in the pool's unit."""
    data = json.loads(payload).get("data", {})
    parts = []
    for key, value in sorted(data.items()):
        if key == "account" or key.endswith("_units"):
            continue
        shown = data.get(f"{key}_units", value) if key in _AMOUNTS else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)
