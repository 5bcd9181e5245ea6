"""Request ids the sidecar makes up for requests that came without one."""

from __future__ import annotations

import re

from creditgate.domain.catalog import ACCOUNT_ID
from creditgate.domain.requests import check_id, new_id


def test_generated_ids_are_distinct_valid_ids() -> None:
    ids = [check_id("", "request_id", generate=True) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:100]:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert ACCOUNT_ID.match(rid)
    # Same process, same random half; the counter half keeps counting.
    assert ids[0][:16] == ids[-1][:16] == new_id()[:16]
