"""Every Redis key creditgate uses, built in one place.

All keys of an account carry the hash tag of its shard, ``{<prefix>:<shard>}``, so each script
touches one slot and runs unchanged on Redis Cluster. The shard's event stream carries the same
tag: an account's state change and its event are written by the same script, atomically.
The shard count must be the same for every sidecar and worker sharing a Redis.
"""

from __future__ import annotations

import zlib

DEFAULT_PREFIX = "cg"
DEFAULT_SHARDS = 16
# Separates account and request id in record keys; ACCOUNT_ID never contains it.
_SEP = "|"


class KeySpace:
    """Key names for one deployment (a prefix and a fixed number of shards)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, shards: int = DEFAULT_SHARDS) -> None:
        if shards < 1:
            msg = "shards must be at least 1"
            raise ValueError(msg)
        self.prefix = prefix
        self.shards = shards
        self._tags = [f"{{{prefix}:{i}}}" for i in range(shards)]

    def shard_of(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode()) % self.shards

    def tag(self, account_id: str) -> str:
        return self._tags[self.shard_of(account_id)]

    def account(self, account_id: str, *request_ids: str) -> tuple[str, ...]:
        """The KEYS of a script, with the account's hash tag computed once.

        [1..4] account hash, shard stream, holds hash, hold expiries; then the idempotency
        record of each request id given (charge, reservation, refund or grant).
        """
        tag = self.tag(account_id)
        return (
            f"{tag}:a:{account_id}",
            f"{tag}:ev",
            f"{tag}:h:{account_id}",
            f"{tag}:x:{account_id}",
            *(f"{tag}:r:{account_id}{_SEP}{rid}" for rid in request_ids),
        )

    def record_prefix(self, account_id: str) -> str:
        """An account's idempotency record keys are this prefix and the request id."""
        return f"{self.tag(account_id)}:r:{account_id}{_SEP}"

    def record(self, account_id: str, request_id: str) -> str:
        """Idempotency record of a charge, reservation, refund or grant."""
        return self.account(account_id, request_id)[4]

    def stream(self, shard: int) -> str:
        return f"{self._tags[shard]}:ev"

    def streams(self) -> list[str]:
        return [self.stream(i) for i in range(self.shards)]
