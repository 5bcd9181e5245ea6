"""``creditgate account terms``: an account's seats, overrides and flags (docs/TERMS.md).

Amounts are decimals in whole units (``--allowance premium=2500``, ``--price zite.slack=0``,
``--rate credits:llm_token=0.000008``, ``--cap-range payg=100..50000``); the request carries
micro-units. The terms given replace the account's terms whole. ``account create`` takes the
same options: a recurring charge a flag prices is then charged for the first period at once.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from creditgate.domain.money import to_micro
from creditgate.wiring.cli.client import client, pair, parser, whole

if TYPE_CHECKING:
    from creditgate.v1 import admin_pb2
    from creditgate.wiring.cli.client import Sub

__all__ = ["register"]


def _micro(text: str, what: str) -> int:
    try:
        value = to_micro(text)
    except ValueError as exc:
        msg = f"{what}: {exc}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0:
        msg = f"{what}: must be 0 or more, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _amount(text: str) -> tuple[str, int]:
    key, value = pair(text)
    return key, _micro(value, key)


def _rate(text: str) -> tuple[str, str, int]:
    key, value = pair(text)
    pool, sep, meter = key.partition(":")
    if not sep or not pool or not meter:
        msg = f"takes pool:meter=rate, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return pool, meter, _micro(value, key)


def _cap_range(text: str) -> tuple[str, int, int]:
    pool, value = pair(text)
    low, sep, high = value.partition("..")
    if not sep:
        msg = f"takes pool=min..max (max empty: no maximum), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return pool, _micro(low or "0", pool), _micro(high, pool) if high else -1


def message(a: argparse.Namespace) -> admin_pb2.Terms | None:
    """The terms the options give; None when none was given (the plan as it is)."""
    from creditgate.v1 import admin_pb2  # noqa: PLC0415

    if a.seats == 1 and not (a.allowance or a.price or a.rate or a.cap or a.flag):
        return None
    return admin_pb2.Terms(
        seats=a.seats,
        allowances=dict(a.allowance),
        prices=dict(a.price),
        rates=[admin_pb2.RateOverride(pool_id=p, meter=m, rate=r) for p, m, r in a.rate],
        caps=[admin_pb2.CapRange(pool_id=p, cap_min=lo, cap_max=hi) for p, lo, hi in a.cap],
        flags=a.flag,
    )


def request(a: argparse.Namespace) -> admin_pb2.SetTermsRequest:
    from creditgate.v1 import admin_pb2  # noqa: PLC0415

    return admin_pb2.SetTermsRequest(account_id=a.account_id, terms=message(a))


def register(acc: Sub[argparse.ArgumentParser]) -> None:
    """Add ``account terms`` to the account commands."""
    p = parser(acc, "terms", "set an account's seats, overrides and flags (replaces them)")
    p.add_argument("account_id", help="the account's id, e.g. acct-42")
    options(p)
    p.set_defaults(func=client("admin", "SetTerms", request))


def options(p: argparse.ArgumentParser) -> None:
    """The terms' options, for ``account terms`` and ``account create``."""
    p.add_argument("--seats", type=whole, default=1, help="per_seat allowances x seats (default 1)")
    p.add_argument("--allowance", type=_amount, action="append", default=[],
                   help="pool=amount: an allowance's amount (per seat if per_seat)")  # fmt: skip
    p.add_argument("--price", type=_amount, action="append", default=[],
                   help="action=cost in its meter (0: free); repeatable")  # fmt: skip
    p.add_argument("--rate", type=_rate, action="append", default=[],
                   help="pool:meter=rate, money per meter unit; repeatable")  # fmt: skip
    p.add_argument("--cap-range", dest="cap", type=_cap_range, action="append", default=[],
                   help="pool=min..max money per period (max empty: none); repeatable")  # fmt: skip
    p.add_argument("--flag", action="append", default=[],
                   help="selects the plan's flag_prices, e.g. existing_customer")  # fmt: skip
