"""What every gateway mapping shares: the plans file's model base, ``Charge`` and ``MappingError``.

domain/gateway.py (Envoy's rate-limit filter) and domain/ext_authz.py (its external
authorization filter) each turn a gateway's question into one ``Charge``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from creditgate.domain.errors import InvalidArgumentError

# A descriptor entry key as Envoy writes it in ``descriptor_key`` (any text; kept short here).
EntryKey = Annotated[str, Field(min_length=1, max_length=64)]
ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # domain.requests' attribute keys


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MappingError(InvalidArgumentError):
    """A request the mapping cannot turn into a charge; ``reason`` names the kind for callers."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Charge:
    """One charge a gateway asks for (``index``: the rate-limit descriptor that made it)."""

    index: int
    account_id: str
    action: str
    quantity: int
    attributes: dict[str, str]
    request_id: str
    dry_run: bool
