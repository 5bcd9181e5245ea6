"""A Stripe-style HTTP payment provider: the subset creditgate needs, over httpx.

Per charge, two requests (form-encoded, ``Authorization: Bearer <key>``):

1. ``GET /v1/customers/{account}``: the customer whose id is the account id; its
   ``invoice_settings.default_payment_method`` is the saved card (none: a decline,
   ``no_payment_method``).
2. ``POST /v1/payment_intents`` with ``amount`` (cents), ``currency``, ``customer``,
   ``payment_method``, ``confirm=true``, ``off_session=true`` and the header
   ``Idempotency-Key``. Status ``succeeded`` is approved; a 402 card error, or any other status,
   is declined with the provider's code and message. A timeout, a connection error, a 5xx, a 429
   or a 409 (the same key still in progress) is unreachable: retry with the same key.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

from creditgate.payments.provider import Approved, Charge, Declined, Outcome, Unreachable

__all__ = ["StripeProvider"]

log = logging.getLogger("creditgate.payments")
_RETRY_LATER = frozenset({409, 429})
_SERVER_ERROR = 500


def _error(body: Any) -> dict[str, Any]:  # noqa: ANN401 - parsed JSON
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _json(response: httpx.Response) -> Any:  # noqa: ANN401 - parsed JSON
    try:
        return response.json()
    except ValueError:
        return {}


class StripeProvider:
    """Charges through a Stripe-style API at ``url`` with the secret ``key``."""

    def __init__(self, url: str, key: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.name = f"payment provider at {self.url}"
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout_s),
        )

    async def charge(self, charge: Charge) -> Outcome:
        try:
            outcome = await self._charge(charge)
        except httpx.TimeoutException:
            outcome = Unreachable("timeout", f"{self.name} did not answer in time")
        except httpx.HTTPError as exc:
            outcome = Unreachable("unavailable", f"{self.name} is unreachable: {exc}")
        log.info("%s: %s %s (%s)", self.name, outcome.kind, charge.text(), _detail(outcome))
        return outcome

    async def _charge(self, charge: Charge) -> Outcome:
        customer = await self._client.get(f"/v1/customers/{quote(charge.account, safe='')}")
        early = self._unreachable(customer)
        if early is not None:
            return early
        if customer.status_code == httpx.codes.NOT_FOUND:
            msg = f"the provider has no customer {charge.account!r}; create it with a card"
            return Declined("no_customer", msg)
        settings = _json(customer).get("invoice_settings") or {}
        method = settings.get("default_payment_method") if isinstance(settings, dict) else None
        if not method:
            msg = "the account has no saved default payment method; add one and retry"
            return Declined("no_payment_method", msg)
        response = await self._client.post(
            "/v1/payment_intents",
            data={
                "amount": str(charge.cents),
                "currency": charge.currency.lower(),
                "customer": charge.account,
                "payment_method": str(method),
                "confirm": "true",
                "off_session": "true",
                "description": charge.description,
            },
            headers={"Idempotency-Key": charge.idempotency_key},
        )
        return self._unreachable(response) or _decide(response)

    def _unreachable(self, response: httpx.Response) -> Unreachable | None:
        code = response.status_code
        if code >= _SERVER_ERROR or code in _RETRY_LATER:
            message = _error(_json(response)).get("message") or response.reason_phrase
            return Unreachable("unavailable", f"{self.name} answered {code}: {message}")
        return None

    async def close(self) -> None:
        await self._client.aclose()


def _decide(response: httpx.Response) -> Outcome:
    body = _json(response)
    if response.is_success and isinstance(body, dict):
        if body.get("status") == "succeeded" and body.get("id"):
            return Approved(str(body["id"]))
        failure = body.get("last_payment_error") or {}
        code = failure.get("decline_code") or failure.get("code") or str(body.get("status"))
        message = failure.get("message") or f"the payment is {body.get('status')}"
        return Declined(str(code), str(message), str(body.get("id") or ""))
    err = _error(body)
    code = err.get("decline_code") or err.get("code") or f"http_{response.status_code}"
    message = err.get("message") or f"the provider refused the payment ({response.status_code})"
    intent = err.get("payment_intent")
    reference = intent.get("id", "") if isinstance(intent, dict) else ""
    return Declined(str(code), str(message), str(reference))


def _detail(outcome: Outcome) -> str:
    if isinstance(outcome, Approved):
        return outcome.reference
    if isinstance(outcome, Declined):
        return f"{outcome.code}: {outcome.message}"
    return outcome.message
