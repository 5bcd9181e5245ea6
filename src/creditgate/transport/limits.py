"""How much a request may be, checked on its bytes before it is parsed.

Parsing is where a large request costs memory: a 2.8 MB CheckAndConsumeBatch of 100,000 tiny
items became about 20 MiB of message objects before the 1,000-item check could refuse it, and
16 such calls in flight took the sidecar past its 256 MiB limit. So:

- the server refuses any message above ``MAX_RECEIVE_BYTES`` (gRPC's own check, before the bytes
  reach Python); that is what a 1,000-item batch of ordinary items needs;
- every other method takes at most ``MAX_REQUEST_BYTES``, which fits its largest valid request;
- a batch's items and their attributes are counted on the wire (no message is built) and a
  batch with more than the valid number of either is refused before it is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_BATCH = 1000
MAX_ATTRIBUTES = 32  # domain.requests.MAX_ATTRIBUTES; a batch item may have no more
# A valid CheckAndConsume/Reserve is at most about 36 KB: four ids of 128 bytes, and 32
# attributes of a 64-byte key and a 256-character (up to 1 KB of UTF-8) value.
MAX_REQUEST_BYTES = 64 * 1024
# A batch: 1,000 items of about 1 KB (ids, action and a few attributes). Larger batches are
# split by the caller.
MAX_RECEIVE_BYTES = 1024 * 1024
MAX_STREAMS = 1000
LOOKAHEAD_BYTES = 16 * 1024  # HTTP/2 window of a call whose request is not read yet
BATCH_METHOD = "CheckAndConsumeBatch"
# Envoy's ext_authz Check carries the request's headers: Envoy takes up to 60 KiB of them by
# default (max_request_headers_kb), and the rest of the attributes are small.
LARGER = {"Check": 128 * 1024}
_ITEMS_FIELD = 1  # CheckAndConsumeBatchRequest.requests
_ATTRIBUTES_FIELD = 4  # CheckAndConsumeRequest.attributes
_LENGTH_DELIMITED = 2


class TooLargeError(ValueError):
    """The request is larger than its method allows; ``str`` says by how much."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:  # noqa: PLR2004 - 64-bit varints
            msg = "truncated varint"
            raise TooLargeError(msg)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes, start: int, end: int, number: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-delimited field ``number`` in data[start:end], in order.

    A generator, so that counting builds nothing. Other wire types are skipped; a truncated
    message ends the scan (the parser reports it).
    """
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == _LENGTH_DELIMITED:
            size, pos = _varint(data, pos)
            if key >> 3 == number:
                yield pos, pos + size
            pos += size
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:  # noqa: PLR2004 - fixed32
            pos += 4
        else:
            return  # groups are not used by our messages: let the parser refuse it


def check_batch(data: bytes) -> None:
    """Refuse a batch with too many items, or an item with too many attributes.

    The scan stops at the first item or attribute over the limit: a 100,000-item batch costs
    what a valid one does (counting all of them into lists took 19 MiB and 40 ms each).
    """
    for index, (start, end) in enumerate(_fields(data, 0, len(data), _ITEMS_FIELD)):
        if index == MAX_BATCH:
            msg = f"a batch holds at most {MAX_BATCH} requests; this one has more: split it"
            raise TooLargeError(msg)
        for count, _ in enumerate(_fields(data, start, end, _ATTRIBUTES_FIELD), 1):
            if count > MAX_ATTRIBUTES:
                msg = (
                    f"requests[{index}].attributes: at most {MAX_ATTRIBUTES} entries; "
                    "this one has more"
                )
                raise TooLargeError(msg)


def check_size(method: str, data: bytes) -> None:
    """Refuse a request larger than ``method`` can validly need."""
    most = LARGER.get(method, MAX_REQUEST_BYTES)
    if method != BATCH_METHOD and len(data) > most:
        msg = f"{method} request is {len(data):,} bytes; a valid one needs at most {most:,}"
        raise TooLargeError(msg)


def server_options() -> list[tuple[str, int]]:
    """GRPC server options that bound what one client can make the sidecar hold."""
    return [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        # Calls in flight per connection. Well above what a client needs (the concurrency
        # tests run 200 at once on one channel): a client that opens more streams before it
        # has the server's HTTP/2 settings gets them refused (UNAVAILABLE), not queued.
        ("grpc.max_concurrent_streams", MAX_STREAMS),
        # What gRPC buffers of a request nobody has asked to read yet (transport/budget.py).
        # BDP probing grows the HTTP/2 windows to megabytes: 256 unread 1 MB calls took a bare
        # server to 286 MiB with it, 56 MiB without. The window is then the lookahead: 1,000
        # unread calls took it to 118 MiB at 64 KiB (gRPC's default), 71 MiB at 16 KiB. A
        # larger request is let in once the handler reads it.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", LOOKAHEAD_BYTES),
    ]
