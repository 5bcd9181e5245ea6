"""The opaque cursor of ``ListTransactions``: where the next page starts, bound to its listing.

It carries the ledger's position (``<ver>.<seq>`` of the last row shown) and a digest of that
position with the account and pool it was listed for, base64url-encoded. A cursor that was
edited, truncated or made for another account or pool fails the digest: INVALID_ARGUMENT with
what to send instead, never a page of something else. The digest guards against mistakes, not
forgery: a forged position only pages the caller's own account, which it may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from creditgate.domain.errors import InvalidArgumentError

__all__ = ["decode", "encode"]

_VERSION = "c1"
_MAX_LEN = 200
_NUMBER = re.compile(r"[0-9]{1,19}")
_BAD = (
    "cursor {!r} is not a next_cursor this listing gave ({}): pass back next_cursor unchanged, "
    "with the same account_id and pool_id, or no cursor for the newest page"
)


def _digest(account: str, pool: str, position: str) -> str:
    raw = f"{_VERSION}|{account}|{pool}|{position}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode(account: str, pool: str, position: str) -> str:
    """The cursor for ``position`` (``<ver>.<seq>``) of the listing of ``account``/``pool``."""
    text = f"{_VERSION}.{position}.{_digest(account, pool, position)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(account: str, pool: str, cursor: str) -> str:
    """The position a cursor carries; InvalidArgumentError if it is not one this listing gave."""
    if len(cursor) > _MAX_LEN:
        raise InvalidArgumentError(_BAD.format(cursor[:20] + "...", "too long"))
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgumentError(_BAD.format(cursor, "not base64url")) from None
    parts = text.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not all(map(_NUMBER.fullmatch, parts[1:3])):  # noqa: PLR2004 - version, ver, seq, digest
        raise InvalidArgumentError(_BAD.format(cursor, "malformed"))
    position = f"{parts[1]}.{parts[2]}"
    if not hmac.compare_digest(parts[3], _digest(account, pool, position)):
        raise InvalidArgumentError(_BAD.format(cursor, "altered, or for another account or pool"))
    return position
