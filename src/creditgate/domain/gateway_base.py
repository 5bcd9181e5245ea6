"""What every gateway mapping shares: the plans file's model base, ``Charge`` and ``MappingError``.

domain/gateway.py (Envoy's rate-limit filter) and domain/ext_authz.py (its external
authorization filter) each turn a gateway's question into one ``Charge``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from creditgate.domain.errors import ConfigError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable

# A descriptor entry key as Envoy writes it in ``descriptor_key`` (any text; kept short here).
EntryKey = Annotated[str, Field(min_length=1, max_length=64)]
ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # domain.requests' attribute keys
_WHOLE = re.compile(r"[0-9]{1,15}")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MappingError(InvalidArgumentError):
    """A request the mapping cannot turn into a charge; ``reason`` names the kind for callers.

    ``request_id``: the id the request carried, if any, so that the refusal can be matched to
    the gateway's own logs.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = ""


def check_names(where: str, named: list[str], noun: str, short: str) -> None:
    """ConfigError when one name (an entry key, a header) is given two meanings."""
    twice = sorted({k for k in named if named.count(k) > 1})
    if twice:
        msg = (
            f"{where}: the {noun} {twice[0]!r} is given two meanings; each {short} names one thing"
        )
        raise ConfigError(msg)


def check_section(
    where: str,
    attribute_field: str,
    attribute_keys: Iterable[str],
    default_action: str | None,
    actions: frozenset[str],
) -> None:
    """What a gateway section's attribute keys and default action must be (ConfigError)."""
    for key in attribute_keys:
        if ATTRIBUTE_KEY.fullmatch(key) is None:
            msg = (
                f"{where}.{attribute_field}: {key!r} cannot be an attribute key (1-64 letters, "
                "digits, _.:-)"
            )
            raise ConfigError(msg)
    if default_action is not None and default_action not in actions:
        msg = f"{where}.default_action: unknown action {default_action!r} (not under actions)"
        raise ConfigError(msg)


def whole_number(given: str, where: str, *, zero: bool = False) -> int:
    """A quantity a gateway sent as text (a header, a descriptor entry); MappingError if not one.

    ``zero`` admits 0 (a stream that used nothing); 15 digits at most.
    """
    if _WHOLE.fullmatch(given) is None or (int(given) == 0 and not zero):
        least = "0 or more" if zero else "above 0"
        msg = f"{where} is {given[:32]!r}; send a whole number {least}, of 15 digits at most"
        raise MappingError(msg, "INVALID_QUANTITY")
    return int(given)


class Phase(StrEnum):
    """What a gateway's question does: charge now, or hold an estimate and settle it later."""

    CHARGE = "charge"
    RESERVE = "reserve"  # hold the estimate under the request id (the request comes in)
    SETTLE = "settle"  # charge the hold what was used (the stream is done)
    RELEASE = "release"  # give the hold back (the stream is done, its usage unknown)


@dataclass(frozen=True, slots=True)
class Charge:
    """One charge a gateway asks for (``index``: the rate-limit descriptor that made it).

    A ``RESERVE`` holds ``quantity`` for ``hold_ttl_seconds`` (0: the server's default); a
    ``SETTLE`` charges the hold ``quantity``; a ``RELEASE`` has none.
    """

    index: int
    account_id: str
    action: str
    quantity: int
    attributes: dict[str, str]
    request_id: str
    dry_run: bool
    phase: Phase = Phase.CHARGE
    hold_ttl_seconds: int = 0
    bad_usage: str = ""  # a settle whose usage entry was not a count: charged the estimate
