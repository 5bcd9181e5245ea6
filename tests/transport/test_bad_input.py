"""Bad input on every RPC: the exact status, a message naming the culprit, and no change at all.

Each row of ``CASES`` is one malformed (or refused) request sent over a real channel to a
test-clock sidecar on the demo catalog. Before the call the whole Redis dataset is snapshotted
(every key: its type and full value) and every account's balance is read; after the call both
must be identical, so a refusal can never leave a half-applied charge, an event or a record.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from creditgate.engine import Engine
from creditgate.v1 import admin_pb2, quota_pb2, quota_pb2_grpc
from creditgate.wiring.server import build_server

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from tests.conftest import Sidecar

    from creditgate.domain.catalog import Catalog

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
USD = 1_000_000
PLACEHOLDER = "PLACEHOLDER"  # 11 bytes, swapped for invalid UTF-8 of the same length
BAD_UTF8 = b"\xff\xfe\xc3(\x80" + b"x" * 6

# Accounts every case starts from (see ``_provision``).
TEAM = "acme"  # agent_team: daily, bonus (grant), premium (allowance), payg ($100-$1000 cap)
SHOP = "shop"  # shingle_free: allowances and a usd balance pool "credits"
CHARGE = "r1"  # a charge of 1 agent.message on TEAM
HOLD = "h1"  # an open reservation of 2 agent.message on TEAM
GRANT = "g1"  # 10 bonus credits granted to TEAM
REFUND = "f1"  # a refund of 1 of the 2 agent.message charged by "r2" on TEAM


@dataclass(frozen=True)
class Case:
    """One bad request and what the sidecar must answer."""

    method: str  # "QuotaService/CheckAndConsume"
    request: Message | bytes  # bytes: sent as they are (hand-built, undecodable)
    # None: an answer, not an error (see ``answer``); a tuple: any of these codes will do.
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...] | None
    # Substrings the status details (or the answer's message) must all contain.
    mention: str | tuple[str, ...]
    answer: dict[str, Any] | None = None  # fields the answer must have when code is None


def _q(
    method: str,
    request: Message | bytes,
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...] | None,
    mention: str | tuple[str, ...],
    **answer: Any,  # noqa: ANN401 - expected Decision fields
) -> Case:
    return Case(f"QuotaService/{method}", request, code, mention, answer or None)


def _a(
    method: str,
    request: Message | bytes,
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...],
    mention: str | tuple[str, ...],
) -> Case:
    return Case(f"AdminService/{method}", request, code, mention)


def _raw(message: Message, replace: bytes = BAD_UTF8) -> bytes:
    """Serialize ``message`` and swap its PLACEHOLDER for bytes a valid message cannot hold."""
    data = message.SerializeToString()
    assert data.count(PLACEHOLDER.encode()) == 1
    return data.replace(PLACEHOLDER.encode(), replace)


def consume(**fields: Any) -> quota_pb2.CheckAndConsumeRequest:  # noqa: ANN401
    base: dict[str, Any] = {
        "account_id": TEAM,
        "action": "agent.message",
        "quantity": 1,
        "request_id": "new-1",
    }
    return quota_pb2.CheckAndConsumeRequest(**(base | fields))


def reserve(**fields: Any) -> quota_pb2.ReserveRequest:  # noqa: ANN401
    base: dict[str, Any] = {
        "account_id": TEAM,
        "action": "agent.message",
        "quantity": 1,
        "reservation_id": "new-h",
    }
    return quota_pb2.ReserveRequest(**(base | fields))


def settle(**fields: Any) -> quota_pb2.SettleRequest:  # noqa: ANN401
    base: dict[str, Any] = {"account_id": TEAM, "reservation_id": HOLD, "quantity": 1}
    return quota_pb2.SettleRequest(**(base | fields))


def release(**fields: Any) -> quota_pb2.ReleaseRequest:  # noqa: ANN401
    return quota_pb2.ReleaseRequest(**({"account_id": TEAM, "reservation_id": HOLD} | fields))


def refund(**fields: Any) -> quota_pb2.RefundRequest:  # noqa: ANN401
    base: dict[str, Any] = {"account_id": TEAM, "request_id": CHARGE, "refund_id": "f-1"}
    return quota_pb2.RefundRequest(**(base | fields))


def grant(**fields: Any) -> admin_pb2.GrantRequest:  # noqa: ANN401
    base: dict[str, Any] = {
        "account_id": TEAM,
        "pool_id": "bonus",
        "amount": 5 * USD,
        "grant_id": "g-new",
    }
    return admin_pb2.GrantRequest(**(base | fields))


def settings(**fields: Any) -> admin_pb2.SetPoolSettingsRequest:  # noqa: ANN401
    return admin_pb2.SetPoolSettingsRequest(**({"account_id": TEAM, "pool_id": "payg"} | fields))


def clock(**fields: Any) -> admin_pb2.AdvanceTestClockRequest:  # noqa: ANN401
    return admin_pb2.AdvanceTestClockRequest(**({"account_id": TEAM} | fields))


def create(**fields: Any) -> admin_pb2.CreateAccountRequest:  # noqa: ANN401
    base: dict[str, Any] = {"account_id": "newco", "plan_id": "zite_free"}
    return admin_pb2.CreateAccountRequest(**(base | fields))


def update(**fields: Any) -> admin_pb2.UpdateAccountRequest:  # noqa: ANN401
    return admin_pb2.UpdateAccountRequest(**({"account_id": TEAM} | fields))


def batch(n: int) -> quota_pb2.CheckAndConsumeBatchRequest:
    return quota_pb2.CheckAndConsumeBatchRequest(
        requests=[consume(request_id=f"b{i}") for i in range(n)]
    )


# Ids no id field may take, with what the message shows of them.
BAD_IDS = {
    "space": ("a b", "'a b'"),
    "comma": ("a,b", "'a,b'"),
    "semicolon": ("a;b", "'a;b'"),
    "pipe": ("a|b", "'a|b'"),  # the record-key separator
    "unicode": ("caf\u00e9", "caf"),
    "emoji": ("\U0001f600x", "x"),
    "leading-dash": ("-ab", "'-ab'"),
    "newline": ("a\nb", "a\\nb"),
    "129-chars": ("a" * 129, "aaaa"),
    "10KB": ("a" * 10_240, "aaaa"),
}
# Per RPC: the id fields and a builder taking them as keywords.
ID_FIELDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "QuotaService/CheckAndConsume": (consume, ("account_id", "request_id")),
    "QuotaService/Reserve": (reserve, ("account_id", "reservation_id")),
    "QuotaService/Settle": (settle, ("account_id", "reservation_id")),
    "QuotaService/Release": (release, ("account_id", "reservation_id")),
    "QuotaService/Refund": (refund, ("account_id", "request_id", "refund_id")),
    "QuotaService/GetBalance": (quota_pb2.GetBalanceRequest, ("account_id",)),
    "AdminService/CreateAccount": (create, ("account_id",)),
    "AdminService/UpdateAccount": (update, ("account_id",)),
    "AdminService/GetAccount": (admin_pb2.GetAccountRequest, ("account_id",)),
    "AdminService/Grant": (grant, ("account_id", "grant_id")),
    "AdminService/SetPoolSettings": (lambda **f: settings(cap=200 * USD, **f), ("account_id",)),
    "AdminService/AdvanceTestClock": (lambda **f: clock(seconds=60, **f), ("account_id",)),
    "AdminService/Purchase": (
        lambda **f: admin_pb2.PurchaseRequest(**({"account_id": TEAM, "purchase_id": "p"} | f)),
        ("account_id", "purchase_id"),
    ),
}
# Empty means "generate one" for these, not an error.
GENERATED = {
    ("QuotaService/CheckAndConsume", "request_id"),
    ("QuotaService/Reserve", "reservation_id"),
}


def _id_cases() -> list[Any]:
    out = []
    for method, (build, fields) in ID_FIELDS.items():
        name = method.split("/")[1]
        for field in fields:
            if (method, field) not in GENERATED:
                case = Case(method, build(**{field: ""}), INVALID, f"{field} is required")
                out.append(pytest.param(case, id=f"{name}-{field}-empty"))
            for label, (value, shown) in BAD_IDS.items():
                # The message names the field and shows the culprit (shortened when long).
                case = Case(method, build(**{field: value}), INVALID, (field, shown))
                out.append(pytest.param(case, id=f"{name}-{field}-{label}"))
    return out


def _quantity_cases() -> list[Any]:
    out = []
    values = {
        "negative": -1,
        "int64-min": INT64_MIN,
        "over-1e12": 10**12 + 1,
        "int64-max": INT64_MAX,
        "zero": 0,
    }
    for name, build, zero_ok in (
        ("CheckAndConsume", consume, False),
        ("Reserve", reserve, False),
        ("Settle", settle, True),
        ("Refund", refund, True),
    ):
        for label, value in values.items():
            if label == "zero" and zero_ok:
                continue
            case = _q(name, build(quantity=value), INVALID, ("quantity", f"got {value}"))
            out.append(pytest.param(case, id=f"{name}-quantity-{label}"))
    return out


def _attribute_cases() -> list[Any]:
    many = {f"k{i}": "v" for i in range(33)}
    rows = {
        "33-entries": ({"attributes": many}, "at most 32"),
        "key-empty": ({"attributes": {"": "v"}}, "key ''"),
        "key-space": ({"attributes": {"a b": "v"}}, "'a b'"),
        "key-slash": ({"attributes": {"a/b": "v"}}, "'a/b'"),
        "key-65-chars": ({"attributes": {"k" * 65: "v"}}, "kkkk"),
        "key-unicode": ({"attributes": {"mod\u00e8le": "v"}}, "mod"),
        "value-257-chars": ({"attributes": {"model": "x" * 257}}, "'model'"),
        "value-newline": ({"attributes": {"model": "li\nght"}}, "control characters"),
        "value-nul": ({"attributes": {"model": "li\x00ght"}}, "'model'"),
        "value-del": ({"attributes": {"model": "light\x7f"}}, "'model'"),
    }
    out = []
    for name, build in (("CheckAndConsume", consume), ("Reserve", reserve)):
        for label, (fields, mention) in rows.items():
            out.append(
                pytest.param(
                    _q(name, build(**fields), INVALID, ("attributes", mention)),
                    id=f"{name}-attributes-{label}",
                )
            )
    return out


def _utf8_cases() -> list[Any]:
    """Invalid UTF-8 (bytes no Python client can produce) in string and map fields."""
    rows = [
        ("CheckAndConsume", consume(attributes={"model": PLACEHOLDER}), "value"),
        ("CheckAndConsume", consume(attributes={PLACEHOLDER: "light"}), "key"),
        ("CheckAndConsume", consume(account_id=PLACEHOLDER), "account_id"),
        ("CheckAndConsume", consume(action=PLACEHOLDER), "action"),
        ("Reserve", reserve(attributes={"model": PLACEHOLDER}), "value"),
        (
            "CheckAndConsumeBatch",
            quota_pb2.CheckAndConsumeBatchRequest(
                requests=[consume(attributes={"model": PLACEHOLDER})]
            ),
            "batch-value",
        ),
        ("GetBalance", quota_pb2.GetBalanceRequest(account_id=PLACEHOLDER), "account_id"),
        ("Refund", refund(refund_id=PLACEHOLDER), "refund_id"),
    ]
    # The decoder says which message and that a string had bad UTF-8, not which field.
    mention = ("not a valid message", "UTF-8")
    out = [
        pytest.param(_q(name, _raw(message), INVALID, mention), id=f"{name}-utf8-{label}")
        for name, message, label in rows
    ]
    out += [
        pytest.param(
            _a("Grant", _raw(grant(note=PLACEHOLDER)), INVALID, mention), id="Grant-utf8-note"
        ),
        # A length prefix that runs past the end of the message.
        pytest.param(
            _q(
                "CheckAndConsume",
                b"\x0a\x7fabc",
                INVALID,
                ("not a valid message", "CheckAndConsumeRequest"),
            ),
            id="CheckAndConsume-truncated",
        ),
    ]
    return out


CASES: list[Any] = [
    *_id_cases(),
    *_quantity_cases(),
    *_attribute_cases(),
    *_utf8_cases(),
    # --- actions -------------------------------------------------------------------------
    pytest.param(
        _q(
            "CheckAndConsume",
            consume(action="agent.nope"),
            None,
            "agent.nope",
            allowed=False,
            reason=quota_pb2.REASON_UNKNOWN_ACTION,
        ),
        id="CheckAndConsume-unknown-action-is-an-answer",
    ),
    pytest.param(
        _q(
            "Reserve",
            reserve(action="agent.nope"),
            None,
            "agent.nope",
            allowed=False,
            reason=quota_pb2.REASON_UNKNOWN_ACTION,
        ),
        id="Reserve-unknown-action-is-an-answer",
    ),
    pytest.param(
        _q("CheckAndConsume", consume(action=""), INVALID, "action is required"),
        id="CheckAndConsume-action-empty",
    ),
    pytest.param(
        _q("CheckAndConsume", consume(action="agent message"), INVALID, "action"),
        id="CheckAndConsume-action-space",
    ),
    pytest.param(
        _q("Reserve", reserve(action="a" * 10_240), INVALID, "action"), id="Reserve-action-10KB"
    ),
    # --- unknown accounts ----------------------------------------------------------------
    pytest.param(
        _q("CheckAndConsume", consume(account_id="ghost"), NOT_FOUND, "'ghost'"),
        id="CheckAndConsume-unknown-account",
    ),
    pytest.param(
        _q("CheckAndConsume", consume(account_id="ghost", dry_run=True), NOT_FOUND, "'ghost'"),
        id="CheckAndConsume-unknown-account-dry-run",
    ),
    pytest.param(
        _q("Reserve", reserve(account_id="ghost"), NOT_FOUND, "'ghost'"),
        id="Reserve-unknown-account",
    ),
    pytest.param(
        _q("Settle", settle(account_id="ghost"), NOT_FOUND, "'ghost'"), id="Settle-unknown-account"
    ),
    pytest.param(
        _q("Release", release(account_id="ghost"), NOT_FOUND, "'ghost'"),
        id="Release-unknown-account",
    ),
    pytest.param(
        _q("Refund", refund(account_id="ghost"), NOT_FOUND, "'ghost'"), id="Refund-unknown-account"
    ),
    pytest.param(
        _q("GetBalance", quota_pb2.GetBalanceRequest(account_id="ghost"), NOT_FOUND, "'ghost'"),
        id="GetBalance-unknown-account",
    ),
    pytest.param(
        _a("GetAccount", admin_pb2.GetAccountRequest(account_id="ghost"), NOT_FOUND, "'ghost'"),
        id="GetAccount-unknown-account",
    ),
    pytest.param(
        _a("UpdateAccount", update(account_id="ghost", status=3), NOT_FOUND, "'ghost'"),
        id="UpdateAccount-unknown-account",
    ),
    pytest.param(
        _a("Grant", grant(account_id="ghost"), NOT_FOUND, "'ghost'"), id="Grant-unknown-account"
    ),
    pytest.param(
        _a("SetPoolSettings", settings(account_id="ghost", enabled=True), NOT_FOUND, "'ghost'"),
        id="SetPoolSettings-unknown-account",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(account_id="ghost", seconds=60), NOT_FOUND, "'ghost'"),
        id="AdvanceTestClock-unknown-account",
    ),
    # --- idempotency ---------------------------------------------------------------------
    pytest.param(
        _q("CheckAndConsume", consume(request_id=CHARGE, quantity=2), PRECONDITION, f"'{CHARGE}'"),
        id="CheckAndConsume-request-id-reused-other-quantity",
    ),
    pytest.param(
        _q(
            "CheckAndConsume",
            consume(request_id=CHARGE, attributes={"model": "pro"}),
            PRECONDITION,
            "request_id",
        ),
        id="CheckAndConsume-request-id-reused-other-attributes",
    ),
    pytest.param(
        _q("Reserve", reserve(reservation_id=HOLD, quantity=3), PRECONDITION, f"'{HOLD}'"),
        id="Reserve-reservation-id-reused-other-quantity",
    ),
    pytest.param(
        _q("Reserve", reserve(reservation_id=CHARGE), PRECONDITION, f"'{CHARGE}'"),
        id="Reserve-reservation-id-of-a-charge",
    ),
    pytest.param(
        _q("Reserve", reserve(reservation_id=HOLD, quantity=3), PRECONDITION, "reservation_id"),
        id="Reserve-reservation-id-reused-names-its-field",
    ),
    pytest.param(
        _a("Grant", grant(grant_id=GRANT, amount=20 * USD), PRECONDITION, f"'{GRANT}'"),
        id="Grant-grant-id-reused-other-amount",
    ),
    # --- reserve -------------------------------------------------------------------------
    pytest.param(
        _q("Reserve", reserve(ttl_seconds=86_401), INVALID, "ttl_seconds"),
        id="Reserve-ttl-beyond-idempotency-ttl",
    ),
    pytest.param(
        _q("Reserve", reserve(ttl_seconds=INT64_MAX), INVALID, "ttl_seconds"),
        id="Reserve-ttl-int64-max",
    ),
    pytest.param(
        _q("Reserve", reserve(ttl_seconds=-1), INVALID, "ttl_seconds"), id="Reserve-ttl-negative"
    ),
    # --- settle, release -----------------------------------------------------------------
    pytest.param(
        _q("Settle", settle(reservation_id="nope"), NOT_FOUND, "'nope'"),
        id="Settle-unknown-reservation",
    ),
    pytest.param(
        _q("Release", release(reservation_id="nope"), NOT_FOUND, "'nope'"),
        id="Release-unknown-reservation",
    ),
    pytest.param(
        _q("Settle", settle(reservation_id=CHARGE), PRECONDITION, "Refund"), id="Settle-a-charge"
    ),
    pytest.param(
        _q("Release", release(reservation_id=CHARGE), PRECONDITION, "Refund"), id="Release-a-charge"
    ),
    pytest.param(
        _q("Settle", settle(account_id=SHOP), NOT_FOUND, f"'{HOLD}'"),
        id="Settle-reservation-of-another-account",
    ),
    # --- refund --------------------------------------------------------------------------
    pytest.param(
        _q("Refund", refund(request_id="nope"), NOT_FOUND, "'nope'"), id="Refund-unknown-request-id"
    ),
    pytest.param(
        _q("Refund", refund(refund_id=CHARGE), INVALID, "refund_id"),
        id="Refund-refund-id-equals-request-id",
    ),
    pytest.param(
        _q("Refund", refund(quantity=5), PRECONDITION, f"'{CHARGE}'"), id="Refund-more-than-charged"
    ),
    pytest.param(
        _q("Refund", refund(request_id=HOLD), PRECONDITION, f"'{HOLD}'"),
        id="Refund-open-reservation",
    ),
    pytest.param(
        _q("Refund", refund(request_id=GRANT), (NOT_FOUND, PRECONDITION), f"'{GRANT}'"),
        id="Refund-a-grant",
    ),
    pytest.param(
        _q(
            "Refund",
            refund(request_id=REFUND, refund_id="f-2"),
            (NOT_FOUND, PRECONDITION),
            f"'{REFUND}'",
        ),
        id="Refund-a-refund",
    ),
    pytest.param(
        _q(
            "Refund",
            refund(request_id="r2", refund_id=REFUND, quantity=2),
            PRECONDITION,
            f"'{REFUND}'",
        ),
        id="Refund-refund-id-reused-other-quantity",
    ),
    pytest.param(
        _q("Settle", settle(reservation_id=GRANT), PRECONDITION, "grant"), id="Settle-a-grant"
    ),
    # --- create / update account ---------------------------------------------------------
    pytest.param(
        _a("CreateAccount", create(plan_id="nope"), INVALID, "'nope'"),
        id="CreateAccount-unknown-plan",
    ),
    pytest.param(
        _a("CreateAccount", create(plan_id=""), INVALID, "plan"), id="CreateAccount-plan-empty"
    ),
    pytest.param(
        _a("CreateAccount", create(account_id=TEAM), EXISTS, f"'{TEAM}'"),
        id="CreateAccount-duplicate",
    ),
    pytest.param(
        _a("CreateAccount", create(account_id=TEAM, plan_id="glue_free"), EXISTS, "UpdateAccount"),
        id="CreateAccount-duplicate-other-plan",
    ),
    pytest.param(
        _a("CreateAccount", create(status=99), INVALID, "status 99"),
        id="CreateAccount-unknown-status-enum",
    ),
    pytest.param(
        _a("CreateAccount", create(status=-1), INVALID, "status -1"),
        id="CreateAccount-negative-status-enum",
    ),
    pytest.param(
        _a("CreateAccount", create(anchor_day=32), INVALID, "anchor_day"),
        id="CreateAccount-anchor-day-32",
    ),
    pytest.param(
        _a("CreateAccount", create(anchor_day=-1), INVALID, "anchor_day"),
        id="CreateAccount-anchor-day-negative",
    ),
    pytest.param(
        _a("UpdateAccount", update(status=99), INVALID, "status 99"),
        id="UpdateAccount-unknown-status-enum",
    ),
    pytest.param(
        _a("UpdateAccount", update(plan_id="nope"), INVALID, "'nope'"),
        id="UpdateAccount-unknown-plan",
    ),
    pytest.param(
        _a("UpdateAccount", update(anchor_day=40), INVALID, "anchor_day"),
        id="UpdateAccount-anchor-day-40",
    ),
    # --- grant ---------------------------------------------------------------------------
    pytest.param(
        _a("Grant", grant(pool_id="premium"), INVALID, "'premium'"), id="Grant-to-allowance-pool"
    ),
    pytest.param(_a("Grant", grant(pool_id="payg"), INVALID, "'payg'"), id="Grant-to-payg-pool"),
    pytest.param(_a("Grant", grant(pool_id="nope"), NOT_FOUND, "'nope'"), id="Grant-unknown-pool"),
    pytest.param(_a("Grant", grant(pool_id=""), NOT_FOUND, "pool"), id="Grant-pool-empty"),
    pytest.param(_a("Grant", grant(amount=0), INVALID, "amount"), id="Grant-amount-zero"),
    pytest.param(
        _a("Grant", grant(amount=-5 * USD), INVALID, "got -5 (-5,000,000 micro-units)"),
        id="Grant-amount-negative",
    ),
    pytest.param(
        _a("Grant", grant(amount=INT64_MAX), INVALID, "amount"), id="Grant-amount-int64-max"
    ),
    pytest.param(
        _a(
            "Grant",
            grant(account_id=SHOP, pool_id="credits", expires_at_unix_ms=4_102_444_800_000),
            INVALID,
            "expires_at",
        ),
        id="Grant-expires-at-on-balance-pool",
    ),
    pytest.param(
        _a("Grant", grant(expires_at_unix_ms=1), INVALID, "expires_at"),
        id="Grant-expires-at-in-the-past",
    ),
    pytest.param(
        _a("Grant", grant(expires_at_unix_ms=-1), INVALID, "expires_at"),
        id="Grant-expires-at-negative",
    ),
    pytest.param(_a("Grant", grant(note="n" * 257), INVALID, "note"), id="Grant-note-257-chars"),
    pytest.param(_a("Grant", grant(amount=2**52 - 1), INVALID, "bonus"), id="Grant-overflows-pool"),
    # --- pool settings -------------------------------------------------------------------
    pytest.param(
        _a("SetPoolSettings", settings(), INVALID, "cap or enabled"),
        id="SetPoolSettings-neither-field",
    ),
    pytest.param(
        _a("SetPoolSettings", settings(cap=100 * USD - 1), INVALID, "cap"),
        id="SetPoolSettings-cap-below-min",
    ),
    pytest.param(
        _a(
            "SetPoolSettings",
            settings(cap=1000 * USD + 1),
            INVALID,
            "between $100.00 and $1,000.00",
        ),
        id="SetPoolSettings-cap-above-max",
    ),
    pytest.param(
        _a("SetPoolSettings", settings(cap=-1), INVALID, "cap"),
        id="SetPoolSettings-cap-none-where-max",
    ),
    pytest.param(
        _a("SetPoolSettings", settings(cap=-5), INVALID, "cap"), id="SetPoolSettings-cap-negative"
    ),
    pytest.param(
        _a("SetPoolSettings", settings(cap=INT64_MAX), INVALID, "cap"),
        id="SetPoolSettings-cap-int64-max",
    ),
    pytest.param(
        _a("SetPoolSettings", settings(pool_id="premium", enabled=False), INVALID, "'premium'"),
        id="SetPoolSettings-allowance-pool",
    ),
    pytest.param(
        _a("SetPoolSettings", settings(pool_id="nope", enabled=True), NOT_FOUND, "'nope'"),
        id="SetPoolSettings-unknown-pool",
    ),
    # --- test clock ----------------------------------------------------------------------
    pytest.param(
        _a("AdvanceTestClock", clock(to_unix_ms=1), INVALID, "to_unix_ms"),
        id="AdvanceTestClock-backwards",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(seconds=60, to_unix_ms=4_102_444_800_000), INVALID, "either"),
        id="AdvanceTestClock-both-fields",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(), INVALID, "either"), id="AdvanceTestClock-neither-field"
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(seconds=-60), INVALID, "seconds"),
        id="AdvanceTestClock-seconds-negative",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(seconds=INT64_MAX), INVALID, "seconds"),
        id="AdvanceTestClock-seconds-int64-max",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(to_unix_ms=-1), INVALID, "to_unix_ms"),
        id="AdvanceTestClock-to-negative",
    ),
    pytest.param(
        _a("AdvanceTestClock", clock(to_unix_ms=INT64_MAX), INVALID, "to_unix_ms"),
        id="AdvanceTestClock-to-int64-max",
    ),
    # --- batch ---------------------------------------------------------------------------
    pytest.param(
        _q("CheckAndConsumeBatch", batch(1001), INVALID, "1000"),
        id="CheckAndConsumeBatch-1001-requests",
    ),
]


# --- helpers -----------------------------------------------------------------------------

_PROVISIONED: list[tuple[Any, int, Any]] = []  # key, PTTL, DUMP of the state below


async def _provision(sidecar: Sidecar, redis: AsyncRedis) -> None:
    """The accounts, charges, hold, grant and refund the cases refer to.

    Built through the API once; later tests restore the same keys byte for byte (DUMP/RESTORE),
    which is much faster than a dozen RPCs per row.
    """
    if _PROVISIONED:
        async with redis.pipeline(transaction=False) as pipe:
            for key, ttl, payload in _PROVISIONED:
                pipe.restore(key, max(ttl, 0), payload, replace=True)
            await pipe.execute()
        # What the sidecar learnt while provisioning (GetBalance on a cold sidecar lists no
        # pools: see test_get_balance_on_a_cold_sidecar_lists_the_pools).
        sidecar.engine.remember(TEAM, "agent_team")
        sidecar.engine.remember(SHOP, "shingle_free")
        return
    admin, quota = sidecar.admin, sidecar.quota
    await admin.CreateAccount(admin_pb2.CreateAccountRequest(account_id=TEAM, plan_id="agent_team"))
    await admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=SHOP, plan_id="shingle_free")
    )
    await admin.Grant(grant(grant_id=GRANT, amount=10 * USD))
    await admin.Grant(grant(account_id=SHOP, pool_id="credits", grant_id="buy", amount=5 * USD))
    d = await quota.CheckAndConsume(consume(request_id=CHARGE))
    assert d.allowed
    d = await quota.Reserve(reserve(reservation_id=HOLD, quantity=2))
    assert d.allowed
    d = await quota.CheckAndConsume(consume(request_id="r2", quantity=2))
    assert d.allowed
    await quota.Refund(refund(request_id="r2", refund_id=REFUND, quantity=1))
    _PROVISIONED.extend(
        [
            (key, await redis.pttl(key), await redis.dump(key))
            async for key in redis.scan_iter(count=1000)
        ]
    )


async def snapshot(redis: AsyncRedis) -> dict[object, tuple[object, object]]:
    """Every key of the database with its type and full value (TTLs left out: they tick)."""
    out: dict[object, tuple[object, object]] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        value: object
        if kind == b"string":
            value = await redis.get(key)
        elif kind == b"hash":
            value = await redis.hgetall(key)
        elif kind == b"list":
            value = await redis.lrange(key, 0, -1)
        elif kind == b"set":
            value = await redis.smembers(key)
        elif kind == b"zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = await redis.xrange(key)
        else:  # pragma: no cover - creditgate uses none other
            value = await redis.dump(key)
        out[key] = (kind, value)
    return out


async def balances(sidecar: Sidecar) -> dict[str, quota_pb2.GetBalanceResponse]:
    return {
        a: await sidecar.quota.GetBalance(quota_pb2.GetBalanceRequest(account_id=a))
        for a in (TEAM, SHOP)
    }


def _call(channel: grpc.aio.Channel, case: Case) -> Any:  # noqa: ANN401
    service, method = case.method.split("/")
    module = quota_pb2 if service == "QuotaService" else admin_pb2
    output = module.DESCRIPTOR.services_by_name[service].methods_by_name[method].output_type
    data = case.request if isinstance(case.request, bytes) else case.request.SerializeToString()
    response_class = getattr(module, output.name)
    call = channel.unary_unary(
        f"/creditgate.v1.{case.method}",
        request_serializer=lambda b: b,
        response_deserializer=response_class.FromString,
    )
    return call(data, timeout=10)


# --- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
async def test_bad_input_is_refused_and_changes_nothing(
    sidecar: Sidecar, redis: AsyncRedis, case: Case
) -> None:
    """A bad request gets its exact status, a message naming the culprit, and no effect."""
    await _provision(sidecar, redis)
    before_balances = await balances(sidecar)
    before = await snapshot(redis)
    mentions = (case.mention,) if isinstance(case.mention, str) else case.mention

    if case.code is None:
        answer = await _call(sidecar.channel, case)
        assert answer.message
        for text in mentions:
            assert text in answer.message, answer.message
        assert case.answer is not None
        for field, value in case.answer.items():
            assert getattr(answer, field) == value, field
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(sidecar.channel, case)
        error = caught.value
        codes = case.code if isinstance(case.code, tuple) else (case.code,)
        assert error.code() in codes, (error.code(), error.details())
        details = error.details() or ""
        assert details.strip()
        for text in mentions:
            assert text in details, details

    assert await snapshot(redis) == before
    assert await balances(sidecar) == before_balances


async def test_malformed_batch_items_are_answers_and_change_nothing(
    sidecar: Sidecar, redis: AsyncRedis
) -> None:
    """Bad items of a batch are denied in their slot with a message; the batch itself succeeds."""
    await _provision(sidecar, redis)
    before = await snapshot(redis)
    bad = [
        (consume(quantity=0), "INVALID_ARGUMENT", "quantity"),
        (consume(account_id="a b"), "INVALID_ARGUMENT", "account_id"),
        (consume(account_id="ghost"), "NOT_FOUND", "'ghost'"),
        (consume(attributes={"a b": "v"}), "INVALID_ARGUMENT", "attributes"),
    ]
    response = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[r for r, _, _ in bad])
    )
    assert len(response.decisions) == len(bad)
    for decision, (_, code, mention) in zip(response.decisions, bad, strict=True):
        assert not decision.allowed
        assert decision.reason == quota_pb2.REASON_UNSPECIFIED
        assert decision.message.startswith(code), decision.message
        assert mention in decision.message
    unknown = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[consume(action="agent.nope")])
    )
    assert unknown.decisions[0].reason == quota_pb2.REASON_UNKNOWN_ACTION
    assert "agent.nope" in unknown.decisions[0].message
    assert await snapshot(redis) == before


@pytest.mark.parametrize(
    ("item", "code", "mention"),
    [
        pytest.param(
            consume(request_id=CHARGE, quantity=3),
            "FAILED_PRECONDITION",
            f"'{CHARGE}'",
            id="reused-request-id",
        ),
        pytest.param(
            consume(request_id="huge", quantity=10**12, attributes={"model": "ultra"}),
            "INVALID_ARGUMENT",
            "split",
            id="cost-beyond-2^52",
        ),
    ],
)
async def test_batch_item_refused_by_the_script_does_not_fail_the_batch(
    sidecar: Sidecar,
    redis: AsyncRedis,
    item: quota_pb2.CheckAndConsumeRequest,
    code: str,
    mention: str,
) -> None:
    """An item the script refuses is refused in its slot only; the others get their answers."""
    await _provision(sidecar, redis)
    response = await sidecar.quota.CheckAndConsumeBatch(
        quota_pb2.CheckAndConsumeBatchRequest(requests=[consume(request_id="fresh"), item])
    )
    fresh, refused = response.decisions
    assert fresh.allowed
    assert not refused.allowed
    assert refused.message.startswith(code)
    assert mention in refused.message


async def test_get_balance_on_a_cold_sidecar_lists_the_pools(
    sidecar: Sidecar, demo_catalog: Catalog
) -> None:
    """A second sidecar on the same Redis sees every pool of an account the first one made."""
    await sidecar.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(account_id=TEAM, plan_id="agent_team")
    )
    cold = Engine(sidecar.engine.redis, demo_catalog, test_clock=True)
    server, _health, port = await build_server(cold, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = quota_pb2_grpc.QuotaServiceStub(channel)
            answer = await stub.GetBalance(quota_pb2.GetBalanceRequest(account_id=TEAM))
        assert {p.pool_id for p in answer.pools} == {"premium", "daily", "bonus", "payg"}
    finally:
        await server.stop(None)


async def test_test_clock_is_refused_without_it(
    redis: AsyncRedis,
    demo_catalog: Catalog,
) -> None:
    """AdvanceTestClock on a server without the test clock is FAILED_PRECONDITION, no change."""
    engine = Engine(redis, demo_catalog, test_clock=False)
    await engine.create_account(TEAM, "agent_team")
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    try:
        before = await snapshot(redis)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/creditgate.v1.AdminService/AdvanceTestClock",
                request_serializer=admin_pb2.AdvanceTestClockRequest.SerializeToString,
                response_deserializer=admin_pb2.Account.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(clock(seconds=60), timeout=10)
        assert caught.value.code() == PRECONDITION
        assert "CREDITGATE_TEST_CLOCK" in (caught.value.details() or "")
        assert await snapshot(redis) == before
    finally:
        await server.stop(None)


def _closed_port() -> int:
    """A port nothing listens on (bound then released; nobody else grabs it in time)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEAD_REDIS_CALLS = [
    ("QuotaService/CheckAndConsume", consume()),
    ("QuotaService/CheckAndConsume", consume(action="agent.nope")),
    ("QuotaService/Reserve", reserve()),
    ("QuotaService/Settle", settle()),
    ("QuotaService/Release", release()),
    ("QuotaService/Refund", refund()),
    ("QuotaService/GetBalance", quota_pb2.GetBalanceRequest(account_id=TEAM)),
    ("AdminService/CreateAccount", create()),
    ("AdminService/UpdateAccount", update(status=3)),
    ("AdminService/GetAccount", admin_pb2.GetAccountRequest(account_id=TEAM)),
    ("AdminService/Grant", grant()),
    ("AdminService/SetPoolSettings", settings(enabled=True)),
    ("AdminService/AdvanceTestClock", clock(seconds=60)),
]


async def test_dead_redis_is_unavailable(demo_catalog: Catalog) -> None:
    """With Redis unreachable every RPC fails UNAVAILABLE (retryable), never UNKNOWN/INTERNAL.

    An unknown action too: whether its account exists (NOT_FOUND) needs Redis.
    """
    dead = AsyncRedis(
        host="127.0.0.1",
        port=_closed_port(),
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    engine = Engine(dead, demo_catalog, test_clock=True)
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        for method, request in DEAD_REDIS_CALLS:
            case = Case(method, request, grpc.StatusCode.UNAVAILABLE, "Redis")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(_call(channel, case), 10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (
                method,
                caught.value.code(),
                caught.value.details(),
            )
            assert "Redis" in (caught.value.details() or ""), method
            assert "retry" in (caught.value.details() or ""), method
    finally:
        await channel.close(None)
        await server.stop(None)
        await dead.aclose()


async def _dead_batch(demo_catalog: Catalog, *, plan_known: bool) -> None:
    dead = AsyncRedis(
        host="127.0.0.1",
        port=_closed_port(),
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    engine = Engine(dead, demo_catalog, test_clock=True)
    if plan_known:  # as after earlier calls for the account reached Redis
        engine.remember(TEAM, "agent_team")
    server, _health, port = await build_server(engine, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        case = Case(
            "QuotaService/CheckAndConsumeBatch", batch(2), grpc.StatusCode.UNAVAILABLE, "Redis"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, case)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert "Redis" in (caught.value.details() or "")
    finally:
        await channel.close(None)
        await server.stop(None)
        await dead.aclose()


async def test_dead_redis_batch_is_unavailable(demo_catalog: Catalog) -> None:
    """A batch against a dead Redis fails as a whole with UNAVAILABLE, so clients retry it."""
    await _dead_batch(demo_catalog, plan_known=True)


async def test_dead_redis_batch_is_unavailable_on_a_cold_sidecar(demo_catalog: Catalog) -> None:
    """Same on a sidecar that has not seen the account yet: the whole batch is UNAVAILABLE."""
    await _dead_batch(demo_catalog, plan_known=False)
