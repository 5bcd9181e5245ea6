"""The error hierarchy. Each kind becomes one gRPC status at the transport boundary.

A quota denial is not an error: it is an answer with ``allowed = false``.
"""

from __future__ import annotations


class CreditgateError(Exception):
    """Base class; ``str(err)`` is a sentence a person can act on."""


class InvalidArgumentError(CreditgateError):
    """The request is malformed; nothing was changed."""


class NotFoundError(CreditgateError):
    """The account, reservation, charge or pool does not exist."""


class AlreadyExistsError(CreditgateError):
    """Creating something that exists already."""


class FailedPreconditionError(CreditgateError):
    """The request is well formed but the current state forbids it."""


class PermissionDeniedError(CreditgateError):
    """The caller may not do this."""


class UnavailableError(CreditgateError):
    """A backend (Redis) cannot be reached; the call may be retried."""


# The trailing metadata key by which such an error of CheckAndConsume or Reserve carries the
# action's ``on_unavailable`` (allow or deny); the SDK applies it (transport/fail_policy.py).
ON_UNAVAILABLE_KEY = "x-creditgate-on-unavailable"


class OutcomeUnknownError(UnavailableError):
    """The command reached Redis but no answer came: it may have been applied.

    Only a retry with the same request id is safe (it replays instead of charging again).
    """


class ConfigError(CreditgateError):
    """The plans file is invalid; raised at start-up, never on a request."""


class UnauthenticatedError(CreditgateError):
    """The call carries no token, or one the server does not know (unknown or revoked)."""
