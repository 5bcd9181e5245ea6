"""Payments: the provider that charges an account's saved payment method, and purchases.

``provider.PaymentProvider`` is the interface (a one-time purchase and, later, an auto top-up
call it with their own id as the idempotency key); ``stripe.StripeProvider`` speaks a
Stripe-style HTTP API; ``provider.TestProvider`` approves everything and moves no money.
``purchases.Purchases`` checks a plan's limits, charges, credits the balance pool through the
engine's Grant and records the purchase in the ledger.
"""
