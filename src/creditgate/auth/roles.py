"""The one permission table: which role may perform which operation.

An operation is what a call does, not only which RPC it is: a Grant into a money balance pool
adds paid money by hand (admins only: a customer's purchase is the Purchase RPC, which charges
the payment provider first; seeds 002/003 let Owner or Admin purchase), a Grant into a grant
pool is a bonus;
SetPoolSettings on an overage pool sets the maximum auto top-up spend (seed 000: Super Admin or
Billing only), on a pay-as-you-go pool the PAYG toggle and cap (seed 004: admins).

A ``service`` charges but does not read accounts: GetBalance and GetAccount are refused, and
its quota answers carry only the balances of the pools the call moved (without ``read_money``,
see ``transport.guard.redact_unmoved``).
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["service", "viewer", "billing", "admin", "owner", "super_admin"]
ROLES: tuple[Role, ...] = get_args(Role)

Op = Literal[
    "quota",  # CheckAndConsume(Batch), Reserve, Settle, Release, Refund, Envoy's two filters
    "read",  # GetBalance, GetAccount (a money balance pool only with read_money)
    # See a money balance pool's figures in GetBalance (seeds 002/003), and in quota answers
    # the balances of pools the call did not move.
    "read_money",
    "manage_accounts",  # CreateAccount, UpdateAccount
    "grant_credits",  # Grant into a grant pool (bonus, promotional)
    "buy_credits",  # Grant into a balance pool: paid money added by an admin, no payment
    "purchase",  # Purchase: charge the saved payment method, credit the balance (seeds 002/003)
    "auto_topup",  # Get/SetAutoTopUp: on, off, threshold, amount (seeds 002/003)
    # SetPoolSettings on an overage pool, SetAutoTopUp's monthly maximum (seed 000)
    "set_max_spend",
    "set_payg",  # SetPoolSettings on a pay-as-you-go pool (seed 004)
    "test_clock",  # AdvanceTestClock
    "set_terms",  # SetTerms, CreateAccount with terms: seats, overrides, flags (admins only)
    "manage_webhooks",  # webhook endpoints, and reading the notifications sent
    # The credits view, history and usage (CreditsService; seeds 002/003: Owner or Admin).
    "view_credits",
]
OPS: tuple[Op, ...] = get_args(Op)

_ADMIN: frozenset[Op] = frozenset(
    {
        "read",
        "read_money",
        "manage_accounts",
        "grant_credits",
        "buy_credits",
        "purchase",
        "auto_topup",
        "set_payg",
        "test_clock",
        "manage_webhooks",
        "set_terms",
        "view_credits",
    }
)

PERMISSIONS: dict[Role, frozenset[Op]] = {
    "service": frozenset({"quota"}),
    "viewer": frozenset({"read"}),
    "billing": frozenset({"read", "set_max_spend"}),
    "admin": _ADMIN,
    # The issue: only an admin adds paid money with Grant; an owner buys it through Purchase.
    # Terms are the contract (seats, custom prices): admins set them, not the customer's owner.
    "owner": _ADMIN - {"buy_credits", "set_terms"},
    # The top role of seed 000: everything, including the calls a service makes.
    "super_admin": frozenset(OPS),
}

# The operations an RPC may be; a call needs one of them (Grant and SetPoolSettings are narrowed
# to one once the pool's kind is known).
RPC_OPS: dict[str, tuple[Op, ...]] = {
    "CheckAndConsume": ("quota",),
    "CheckAndConsumeBatch": ("quota",),
    "Reserve": ("quota",),
    "Settle": ("quota",),
    "Release": ("quota",),
    "Refund": ("quota",),
    "ShouldRateLimit": ("quota",),  # envoy.service.ratelimit.v3.RateLimitService: a charge
    "Check": ("quota",),  # envoy.service.auth.v3.Authorization: a charge
    "GetBalance": ("read",),
    "GetAccount": ("read",),
    "CreateAccount": ("manage_accounts",),
    "UpdateAccount": ("manage_accounts",),
    "Grant": ("grant_credits", "buy_credits"),
    "Purchase": ("purchase",),
    "SetPoolSettings": ("set_max_spend", "set_payg"),
    "SetAutoTopUp": ("auto_topup", "set_max_spend"),
    "GetAutoTopUp": ("auto_topup", "set_max_spend"),
    "AdvanceTestClock": ("test_clock",),
    "SetTerms": ("set_terms",),
    "CreateWebhookEndpoint": ("manage_webhooks",),
    "ListWebhookEndpoints": ("manage_webhooks",),
    "SetWebhookEndpointEnabled": ("manage_webhooks",),
    "DeleteWebhookEndpoint": ("manage_webhooks",),
    "RotateWebhookSecret": ("manage_webhooks",),
    "ListNotifications": ("manage_webhooks",),
    "GetCredits": ("view_credits",),
    "ListTransactions": ("view_credits",),
    "GetUsage": ("view_credits",),
}

GRANT_OPS: dict[str, Op] = {"balance": "buy_credits", "grant": "grant_credits"}
SETTINGS_OPS: dict[str, Op] = {"overage": "set_max_spend", "payg": "set_payg"}


def may(role: Role, ops: tuple[Op, ...]) -> bool:
    """Whether ``role`` holds at least one of ``ops``."""
    held = PERMISSIONS[role]
    return any(op in held for op in ops)


def roles_for(ops: tuple[Op, ...]) -> list[Role]:
    """The roles that may perform one of ``ops``, for messages."""
    return [role for role in ROLES if may(role, ops)]
