"""A real local Stripe-style payment server, for the purchase tests (tests/ is on sys.path).

It serves the subset ``creditgate.payments.stripe`` speaks, on 127.0.0.1 and a free port, in a
thread: ``GET /v1/customers/{id}`` and ``POST /v1/payment_intents`` (form-encoded, confirm=true,
``Idempotency-Key``). The test tells it what to do with the next new payment:

- ``approve``: charge and answer 200 ``status: succeeded``;
- ``decline``: answer 402 with a card error (``insufficient_funds``), charging nothing;
- ``timeout``: charge, then answer only after ``delay_s`` (longer than the client waits);
- ``down``: answer 503 without looking at the payment.

Idempotency as Stripe does it: a key seen before is answered with the first response, never
charged again (``Idempotent-Replayed: true``); the same key with other parameters is a 400.
Concurrent requests with one key are serialized, so they too see one charge.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "sk_test_creditgate"
Mode = Literal["approve", "decline", "timeout", "down"]


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    params: dict[str, str]


@dataclass
class PaymentServer:
    """What the server did: ``charges`` are the payments that moved money, in order."""

    mode: Mode = "approve"
    delay_s: float = 3.0
    no_card: set[str] = field(default_factory=set)  # customers without a default method
    charges: list[dict[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # idempotency key of each POST
    replies: dict[str, Reply] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def charged(self, key: str) -> int:
        """How many times money moved for ``key`` (never more than once)."""
        return sum(1 for c in self.charges if c["key"] == key)

    def customer(self, path: str) -> tuple[int, dict[str, Any]]:
        """A customer (id: the account) with a default payment method unless in ``no_card``."""
        prefix = "/v1/customers/"
        if not path.startswith(prefix):
            return 404, {"error": {"message": "no such route"}}
        customer = unquote(path.removeprefix(prefix))
        method = None if customer in self.no_card else f"pm_card_{len(customer)}"
        settings = {"default_payment_method": method}
        return 200, {"id": customer, "object": "customer", "invoice_settings": settings}

    def pay(self, key: str, params: dict[str, str]) -> tuple[Reply, bool]:
        """The reply to one POST and whether it is a replay."""
        with self.lock:
            self.requests.append(key)
            first = self.replies.get(key)
            if first is not None:
                if first.params != params:
                    err = {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent "
                        "requests can only be used with the same parameters",
                    }
                    return Reply(400, {"error": err}, params), True
                return first, True
            if self.mode == "down":
                err = {"type": "api_error", "message": "the test server is down"}
                return Reply(503, {"error": err}, params), False
            number = len(self.replies) + 1
            intent = {
                "id": f"pi_test_{number}",
                "object": "payment_intent",
                "amount": int(params["amount"]),
                "currency": params["currency"],
                "customer": params["customer"],
            }
            if self.mode == "decline":
                err = {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                    "payment_intent": {**intent, "status": "requires_payment_method"},
                }
                reply = Reply(402, {"error": err}, params)
            else:
                self.charges.append({"key": key, **params})
                reply = Reply(200, {**intent, "status": "succeeded"}, params)
            self.replies[key] = reply
            return reply, False


class _Handler(BaseHTTPRequestHandler):
    server_state: ClassVar[PaymentServer]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401, ARG002 - quiet
        return

    def _send(self, status: int, body: dict[str, Any], replayed: bool = False) -> None:  # noqa: FBT001, FBT002
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        self._send(401, {"error": {"type": "invalid_request_error", "message": "bad key"}})
        return False

    def do_GET(self) -> None:
        if self._authorized():
            self._send(*self.server_state.customer(self.path))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        params = dict(parse_qsl(self.rfile.read(length).decode()))
        if not self._authorized():
            return
        key = self.headers.get("Idempotency-Key", "")
        if self.path != "/v1/payment_intents" or not key or params.get("confirm") != "true":
            self._send(400, {"error": {"message": "need confirm=true and Idempotency-Key"}})
            return
        reply, replayed = self.server_state.pay(key, params)
        if self.server_state.mode == "timeout" and not replayed:
            time.sleep(self.server_state.delay_s)  # charged, but the answer comes too late
        self._send(reply.status, reply.body, replayed)


def serve_payments() -> Iterator[PaymentServer]:
    """Run a ``PaymentServer`` until the generator is closed (a fixture's body)."""
    state = PaymentServer()
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (_Handler,), {"server_state": state})
    )
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
