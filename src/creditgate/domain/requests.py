"""Checks on request fields. Each failure says which field is wrong and what would be right."""

from __future__ import annotations

import itertools
import os
import re

from creditgate.domain.catalog import ACCOUNT_ID
from creditgate.domain.errors import InvalidArgumentError
from creditgate.domain.money import MAX_AMOUNT, MAX_QUANTITY, format_micro
from creditgate.domain.results import Decision, Reason

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_VALUE = 256
MAX_NOTE = 256
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # fullmatch: "$" passes a final "\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
STATUSES = ("active", "trial", "suspended")
# Generated request ids: 32 hex digits, a random half per process and a counter; unique
# without a system call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_id() -> str:
    """A request id for a request that came without one."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def is_valid_id(value: str) -> bool:
    """Whether ``value`` is a well-formed account, request, reservation, refund or grant id."""
    return ACCOUNT_ID.fullmatch(value) is not None


def check_id(value: str, field: str, *, generate: bool = False, longest: int = 128) -> str:
    """An account, request, reservation, refund or grant id (of at most ``longest`` characters)."""
    if not value:
        if generate:
            return new_id()
        msg = f"{field} is required"
        raise InvalidArgumentError(msg)
    if not is_valid_id(value) or len(value) > longest:
        shown = value if len(value) <= 40 else value[:40] + "..."  # noqa: PLR2004
        msg = (
            f"{field} {shown!r} is invalid: use 1-{longest} characters from letters, digits and "
            "._:@/+=- starting with a letter or digit"
        )
        raise InvalidArgumentError(msg)
    return value


def check_quantity(value: int, field: str = "quantity", *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_QUANTITY:
        msg = f"{field} must be between {low} and {MAX_QUANTITY:,}, got {value}"
        raise InvalidArgumentError(msg)
    return value


def check_amount(value: int, field: str = "amount") -> int:
    if not 1 <= value <= MAX_AMOUNT:
        msg = (
            f"{field} must be more than 0 and at most {format_micro(MAX_AMOUNT)} in the pool's "
            f"unit; got {format_micro(value)} ({value:,} micro-units)"
        )
        raise InvalidArgumentError(msg)
    return value


def check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        msg = f"attributes: at most {MAX_ATTRIBUTES} entries, got {len(attributes)}"
        raise InvalidArgumentError(msg)
    for key, value in attributes.items():
        if _ATTRIBUTE_KEY.fullmatch(key) is None:
            msg = f"attributes: key {key[:64]!r} must be 1-64 characters of letters, digits, _.:-"
            raise InvalidArgumentError(msg)
        if len(value) > MAX_ATTRIBUTE_VALUE or _CONTROL.search(value):
            msg = (
                f"attributes: value of {key!r} must be at most {MAX_ATTRIBUTE_VALUE} characters "
                "without control characters"
            )
            raise InvalidArgumentError(msg)
    return attributes


def check_status(value: str) -> str:
    if value not in STATUSES:
        msg = f"status must be one of {', '.join(STATUSES)}"
        raise InvalidArgumentError(msg)
    return value


def check_consume(  # noqa: PLR0913, PLR0917 - the fields of a CheckAndConsume or Reserve
    actions: frozenset[str],
    account_id: str,
    action: str,
    quantity: int,
    attributes: dict[str, str],
    request_id: str,
    *,
    reserve: bool,
) -> tuple[str, Decision | None]:
    """Check a CheckAndConsume or Reserve.

    Returns its request id (generated when empty) and, for an action the price book does not
    have, the answer: a denial, not an error.
    """
    check_id(account_id, "account_id")
    rid = check_id(request_id, "reservation_id" if reserve else "request_id", generate=True)
    if check_consume_shape(actions, action, quantity, attributes):
        return rid, None
    return rid, unknown_action(action, rid)


def check_consume_shape(
    actions: frozenset[str], action: str, quantity: int, attributes: dict[str, str]
) -> bool:
    """The checks of check_consume after the ids; whether the price book has the action."""
    check_quantity(quantity)
    check_attributes(attributes)
    if action in actions:
        return True
    check_id(action, "action")
    return False


def unknown_action(action: str, request_id: str) -> Decision:
    """The answer to an action the price book does not have: a denial, not an error."""
    return Decision(
        allowed=False,
        reason=Reason.UNKNOWN_ACTION,
        cost=0,
        meter="",
        debits=(),
        balances=(),
        request_id=request_id,
        message=f"action {action!r} is not in the price book; add it to the plans file",
    )


def hold_ttl_ms(ttl_seconds: int, idempotency_ttl_ms: int, default_ms: int) -> int:
    """A Reserve's hold TTL in ms: ``ttl_seconds``, or the default for 0.

    A hold may not outlive the idempotency record that settles it.
    """
    max_ttl = idempotency_ttl_ms // 1000
    if not 0 <= ttl_seconds <= max_ttl:
        msg = (
            f"ttl_seconds must be between 1 and {max_ttl} (the idempotency TTL), or 0 for "
            f"the default of {default_ms // 1000}"
        )
        raise InvalidArgumentError(msg)
    return ttl_seconds * 1000 if ttl_seconds else default_ms


def check_grant(account_id: str, grant_id: str, amount: int, expires_at: int, note: str) -> None:
    check_id(account_id, "account_id")
    check_id(grant_id, "grant_id")
    check_amount(amount)
    if expires_at < 0:
        msg = f"expires_at {expires_at}: give 0 (never expires) or a unix time in ms"
        raise InvalidArgumentError(msg)
    if len(note) > MAX_NOTE:
        msg = f"note is {len(note)} characters; at most {MAX_NOTE}"
        raise InvalidArgumentError(msg)
    if "\x00" in note:
        msg = "note contains a NUL character; remove it"
        raise InvalidArgumentError(msg)


def check_refund(account_id: str, request_id: str, refund_id: str, quantity: int) -> None:
    check_id(account_id, "account_id")
    check_id(request_id, "request_id")
    check_id(refund_id, "refund_id")
    check_quantity(quantity, allow_zero=True)
    if refund_id == request_id:
        msg = "refund_id must differ from the request_id of the charge it refunds"
        raise InvalidArgumentError(msg)
