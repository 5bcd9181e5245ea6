"""A real local webhook receiver: an HTTP server on 127.0.0.1:0 that verifies every signature.

It answers from a script of status codes (then 200), checks each request's signatures with the
``standardwebhooks`` library against every secret it was told (a request no secret verifies is
recorded as unverified), and records what arrived.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from creditgate.events.schema import NOTICE, SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import Iterator


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - the receiver's test secret


def notice(  # noqa: PLR0913 - the fields of one notice
    account: str,
    kind: str,
    *,
    pool: str = "wallet",
    bal: int = 4_990_000,
    th: int | None = 5_000_000,
    request_id: str = "req-1",
    t: int = 1_764_000_000_000,
) -> dict[str, str | bytes]:
    """The fields of one ``notice`` stream entry, as the Lua scripts write it (events/schema.py)."""
    fields: dict[str, str | bytes] = {
        "v": SCHEMA_VERSION, "k": NOTICE, "a": account, "r": request_id, "t": str(t), "m": "",
        "n": kind, "pool": pool, "bal": str(bal),
    }  # fmt: skip
    if th is not None:
        fields["th"] = str(th)
    return fields


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    signatures: list[str]
    body: dict[str, Any]
    verified_by: list[str]  # the secrets whose signature matched
    status: int  # what the receiver answered


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    script: list[int] = field(default_factory=list)  # statuses to answer first, in order
    got: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], raw: bytes) -> int:
        verified = []
        for s in self.secrets:
            try:
                Webhook(s).verify(raw, headers)
            except WebhookVerificationError:
                continue
            verified.append(s)
        with self._lock:
            status = self.script.pop(0) if self.script else 200
            self.got.append(
                Received(
                    headers.get("webhook-id", ""),
                    headers.get("webhook-timestamp", ""),
                    headers.get("webhook-signature", "").split(" "),
                    json.loads(raw),
                    verified,
                    status,
                )
            )
        return status

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.got]

    def delivered(self) -> list[Received]:
        return [r for r in self.got if 200 <= r.status < 300]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.handle({k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
            pass

    return Handler


def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Run ``receiver`` on a free loopback port for the duration of a ``with``/fixture."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
