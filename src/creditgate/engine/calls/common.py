"""What every script call shares: lib.lua's ARGV prefix, the reply parts, the call protocol.

ARGV of every script starts with lib.lua's layout: [1] account id, [2] the plan the caller priced
with ('' when it does not know it), [3] test clock '1'/'0', [4] pool count n, then 10 fields per
pool: id, code, period, amount, rate (0 if the pool does not pay for this call), block size, block
price, cap, eligible '1'/'0', enabled '1'/'0', then the plan's recurring charges
(``domain.recurring.spec``, '' for none). What follows is the script's own (each call module says).
The descriptors a Context builds end with that last field. ARGV[2] is ``Plan.key``: the plan id,
with the account's terms' key when it has terms. A script answers {'PLAN', plan, terms JSON, terms
key} when the caller priced with another plan or other terms and {'NO_ACCOUNT'} when the account is
not in Redis (``runner.Runner`` handles both); any other first element is the script's own answer.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from creditgate.domain import recurring, wording
from creditgate.domain.errors import FailedPreconditionError, InvalidArgumentError
from creditgate.domain.results import Movement, Reason, Remaining
from creditgate.driver.wire import encode

if TYPE_CHECKING:
    from creditgate.domain.catalog import Catalog, Plan, Price
    from creditgate.engine.keys import KeySpace

__all__ = [
    "Args",
    "Call",
    "Context",
    "fingerprint",
    "movements",
    "no_plan",
    "reason_text",
    "recorded",
    "remaining",
    "require_plan",
    "text",
    "too_large",
]

Args = list[str | int]
R_co = TypeVar("R_co", covariant=True)
_ARGS_CACHE_SIZE = 20_000

_REASON_TEXT = {
    Reason.INSUFFICIENT_CREDITS: "not enough credits in the pools that accept this action",
    Reason.SPEND_CAP_REACHED: "the spend cap of the current period would be exceeded",
    Reason.ACCOUNT_SUSPENDED: "the account is suspended",
    Reason.NOT_ENTITLED: "no pool of the plan accepts this action with these attributes",
}
# The two stops: until a renewal (a cap lowered below this period's spend; retry_at is the
# renewal), and until a recurring charge is paid (recurring.lua; no time ends it, retry_at 0).
_RENEWAL = "the account is stopped until its renewal (a cap was lowered below this period's spend)"
_UNPAID = "the account is stopped until a recurring charge of its plan is paid"
_UNPAID_FIX = (
    "money or credits that cover it (a purchase, a grant or a paid auto top-up, into a pool that "
    "pays for it) pay it at once, as does a change of plan or terms that makes it payable"
)
_EVERY = {"day": "a day", "month": "a month", "cycle": "each billing cycle"}


def reason_text(reason: Reason, retry_at: int | None = None, plan: Plan | None = None) -> str:
    """Why a request was refused, for a person; ``retry_at`` tells the two stops apart.

    With the account's ``plan`` (its terms applied), the stop until a recurring charge is paid
    names the plan's charges that stop an account, and what each costs.
    """
    if reason == Reason.ACCOUNT_STOPPED:
        if retry_at is None:
            return (
                "the account is stopped, until its renewal or until a recurring charge of its "
                "plan is paid (GetAccount shows which)"
            )
        if retry_at:
            return _RENEWAL
        return f"{_unpaid(plan)}: {_UNPAID_FIX}"
    return _REASON_TEXT.get(reason, reason.name.lower())


def _unpaid(plan: Plan | None) -> str:
    """The stop until a recurring charge is paid, with the charges that can stop the account."""
    named = [] if plan is None else _stopping(plan)
    if not named:
        return f"{_UNPAID} (GetAccount shows it unpaid)"
    which = "its recurring charge" if len(named) == 1 else "one of its recurring charges"
    return f"the account is stopped until {which} {', '.join(named)} is paid"


def _stopping(plan: Plan) -> list[str]:
    """``id (cost a period)`` of each of the plan's paid recurring charges that stop it unpaid."""
    out = []
    for item in plan.recurring:
        due, meter = recurring.cost(plan, item), plan.actions[item.action].meter
        if item.on_short == "stop" and due and meter:
            out.append(f"{item.id} ({wording.quantity(due, meter)} {_EVERY[item.period]})")
    return out


def no_plan(account_id: str, clock: str = "0") -> Args:
    """The common ARGV of a call made without a plan: no pools, no recurring charges."""
    return [account_id, "", clock, 0, ""]


class Context:
    """What calls need from the engine's settings: catalog, keys, TTLs, and the ARGV prefix.

    The pool descriptors of a plan, and of a plan priced for one action, are built once and
    cached (bounded).
    """

    def __init__(
        self,
        catalog: Catalog,
        keys: KeySpace,
        *,
        test_clock: bool,
        idempotency_ttl_ms: int,
        hold_ttl_ms: int,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.test_clock = test_clock
        self.idempotency_ttl_ms = idempotency_ttl_ms
        self.hold_ttl_ms = hold_ttl_ms
        self.clock = "1" if test_clock else "0"
        self._plain: dict[str, Args] = {}
        self._priced: dict[tuple[object, ...], tuple[Args, Price | None, bytes]] = {}

    def header(self, account_id: str, plan: Plan | None, pool_args: Args) -> Args:
        if plan is None:
            return no_plan(account_id, self.clock)
        return [account_id, plan.key, self.clock, len(plan.pools), *pool_args]

    def prefix(self, account_id: str, plan: Plan | None) -> Args:
        """The ARGV prefix with nothing eligible (maintenance and balances only)."""
        return self.header(account_id, plan, self.plain(plan) if plan else [])

    def plain(self, plan: Plan) -> Args:
        args = self._plain.get(plan.key)
        if args is None:
            args = []
            for p in plan.pools:
                args += _pool(p.id, p.code, p.period, p.amount, 0, p, eligible=False)
            args.append(recurring.spec(plan))
            if len(self._plain) >= _ARGS_CACHE_SIZE:
                self._plain.clear()
            self._plain[plan.key] = args
        return args

    def priced(
        self, plan: Plan, action: str, attributes: dict[str, str]
    ) -> tuple[Args, Price | None, bytes]:
        """Pool descriptors with eligibility and rates for one action, and its price.

        The third item is ARGV[2..] (plan id, clock flag, count, descriptors) as RESP, for the
        pipelined connection.
        """
        key = (plan.key, action, *(attributes.get(k) for k in plan.attribute_keys))
        hit = self._priced.get(key)
        if hit is not None:
            return hit
        price = plan.actions[action].price(attributes)
        args: Args = []
        for p in plan.pools:
            rate = None if price is None else p.rate_for(action, price.meter, attributes)
            args += _pool(p.id, p.code, p.period, p.amount, rate or 0, p, eligible=rate is not None)
        args.append(recurring.spec(plan))
        if len(self._priced) >= _ARGS_CACHE_SIZE:
            self._priced.clear()
        encoded = encode([plan.key, self.clock, len(plan.pools), *args])
        self._priced[key] = (args, price, encoded)
        return args, price, encoded


def _pool(  # noqa: PLR0913, PLR0917 - one descriptor's fields
    pool_id: str,
    code: str,
    period: str,
    amount: int,
    rate: int,
    p: Any,  # noqa: ANN401 - domain.catalog.Pool
    *,
    eligible: bool,
) -> Args:
    return [
        pool_id,
        code,
        period,
        amount,
        rate,
        # A balance pool has no blocks: the slot carries its default low-balance threshold.
        p.low_balance if p.code == "B" else p.block_size,
        p.block_price,
        p.cap,
        "1" if eligible else "0",
        "1" if p.enabled else "0",
    ]


class Call(Protocol[R_co]):
    """One script call: the only place that knows that script's KEYS, ARGV and reply."""

    @property
    def script(self) -> str: ...

    @property
    def account_id(self) -> str: ...

    def keys(self) -> tuple[str, ...]: ...

    def argv(self, plan: Plan | None) -> Args: ...

    def result(self, plan: Plan | None, reply: list[Any]) -> R_co: ...


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def movements(plan: Plan, reply: list[Any], at: int) -> tuple[tuple[Movement, ...], int]:
    """Rows of (pool, amount, remaining, covered) starting with their count at ``at``."""
    n = reply[at]
    rows = []
    i = at + 1
    units = plan.units
    for _ in range(n):
        pool_id = text(reply[i])
        rows.append(
            Movement(pool_id, reply[i + 1], units.get(pool_id, ""), reply[i + 2], reply[i + 3])
        )
        i += 4
    return tuple(rows), i


def remaining(plan: Plan, reply: list[Any], at: int) -> tuple[Remaining, ...]:
    """The balance of every pool of the plan, in its order, from ``at`` on."""
    return tuple(
        Remaining(pool_id, reply[at + i], unit) for i, (pool_id, unit) in enumerate(plan.layout)
    )


def recorded(catalog: Catalog, plan: Plan, reply: list[Any]) -> tuple[Plan, str, list[Any]]:
    """A replayed answer {'REPLAY', plan then, meter, reply}, read with its plan then.

    Plans can change between the first answer and its replay. (Terms change no pool's id or
    unit, so the plan of the key the answer was priced with, without its terms, reads it.)
    """
    then = catalog.plan(reply[1].decode().partition("#")[0]) or plan
    return then, reply[2].decode(), reply[3]


def fingerprint(value: str) -> str:
    """What an idempotency record remembers of its request, to refuse reuse for another."""
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


def too_large(reply: list[Any]) -> None:
    """The script found quantity x price beyond the exact range."""
    if reply[0] == b"TOO_LARGE":
        msg = "quantity x price is beyond the exact range (2^52 micro-units); split it"
        raise InvalidArgumentError(msg)


def require_plan(plan: Plan | None) -> Plan:
    """After the runner returned the script's own answer the plan is known; narrows the type."""
    if plan is None:  # pragma: no cover - only a priced call gets the script's own answer
        msg = "internal: no plan"
        raise FailedPreconditionError(msg)
    return plan
