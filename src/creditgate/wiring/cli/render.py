"""Answers of the sidecar as a person reads them: aligned text, amounts with their units.

The wire speaks integers in micro-units with the unit beside them (``cost: 5000000``, ``meter:
integration_credit``); here that is ``5 integration_credit``, a money amount in USD is
``$12.50``, ``-1`` where the proto says "no limit" is ``unlimited``, and ``*_unix_ms`` times
are ISO 8601 in UTC. Scalars become ``label  value`` lines, repeated messages become tables.
``--json`` bypasses all of this and prints the proto's JSON mapping, in micro-units.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from creditgate.domain.money import format_micro
from creditgate.domain.wording import amount, utc

if TYPE_CHECKING:
    from google._upb._message import FieldDescriptor as UpbField
    from google.protobuf.descriptor import FieldDescriptor as PyField
    from google.protobuf.message import Message

    FieldDescriptor = PyField | UpbField  # protobuf's stubs give descriptors either type

__all__ = ["render"]

# Which sibling field names the unit of an amount field. Fields not listed here are plain
# numbers. ``covered`` and the Decision-level amounts are in the action's meter.
_UNIT_OF = {
    "amount": "unit",
    "remaining": "unit",
    "balance": "unit",
    "cap": "unit",
    "threshold": "unit",
    "monthly_max": "unit",
    "covered": "meter",
    "cost": "meter",
    "shortfall": "meter",
    "held": "meter",
    "returned": "meter",
    "refunded": "meter",
    "refundable": "meter",
    # The credits view (CreditsService): in the unit beside them.
    "low_balance_threshold": "unit",
    "lifetime_added": "unit",
    "lifetime_spent": "unit",
    "used": "unit",
}
# PoolBalance keeps its spend (overage and pay-as-you-go money) in ``spend_unit``.
_SPEND_FIELDS = frozenset({"spent", "cap"})
_UNLIMITED = -1
_ALWAYS = frozenset(
    {"allowed", "cost", "balance", "held", "returned", "refunded", "released"}
    | {"low_balance", "lag_ms", "caught_up"}  # the credits view: the badge, and how current
)
_UNITS = frozenset({"unit", "meter", "spend_unit"})  # shown with the amounts, not on their own
# A notification's body (its summary is shown) and a movement's event id: --json has them.
_JSON_ONLY = frozenset({"payload", "event_id"})
# Maps of amounts whose unit the answer does not carry (Terms: an allowance in its pool's meter,
# a price in its action's): shown as decimals of that unit.
_AMOUNT_MAPS = frozenset({"allowances", "prices"})
# Amounts whose unit the message does not carry either (Terms' rate overrides, money per meter
# unit; cap ranges, in the pool's money): decimals, -1 ``unlimited``.
_DECIMALS = frozenset({"rate", "cap_min", "cap_max"})


def _label(name: str) -> str:
    return name.removesuffix("_unix_ms").replace("_", " ")


def _unit(message: Message, name: str, meter: str, outer: str = "") -> str | None:
    """The unit of amount field ``name``: a sibling field's, else the meter or ``outer``.

    ``outer`` is the unit of the message this one is nested in (a pool's, for its lots).
    """
    """The unit of amount field ``name`` of ``message``, or None if it is not an amount."""
    fields = message.DESCRIPTOR.fields_by_name
    if name in _SPEND_FIELDS and "spend_unit" in fields:
        return str(getattr(message, "spend_unit")) or None  # noqa: B009 - only money pools spend
    sibling = _UNIT_OF.get(name)
    if sibling is None:
        return None
    if sibling in fields:
        return str(getattr(message, sibling))
    return meter if sibling == "meter" else (outer or None)


def _value(message: Message, field: FieldDescriptor, meter: str, outer: str = "") -> str:
    value = getattr(message, field.name)
    if field.enum_type is not None:
        name = field.enum_type.values_by_number[value].name
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper()  # AccountStatus
        return name.removeprefix(f"{prefix}_").lower()
    if field.type == field.TYPE_BOOL:
        return "yes" if value else "no"
    if field.name.endswith("_unix_ms"):
        return utc(value) if value else "-"
    return _number(message, field.name, value, _unit(message, field.name, meter, outer))


def _number(message: Message, name: str, value: int, unit: str | None) -> str:
    """A number field: an amount in ``unit``, a decimal of an unnamed unit, or a plain count."""
    if unit is None and name in _SPEND_FIELDS and "spend_unit" in message.DESCRIPTOR.fields_by_name:
        return "-"
    if unit is None and name not in _DECIMALS:
        return str(value)
    if value == _UNLIMITED:
        return "unlimited"
    return amount(value, unit) if unit is not None else format_micro(value)


def _shown(message: Message, field: FieldDescriptor) -> bool:
    """Scalars that say something: the answer's flags and amounts, and whatever is set."""
    if field.name in _UNITS:
        return False
    return field.name in _ALWAYS or bool(getattr(message, field.name))


def _table(rows: list[Message], meter: str, indent: str, outer: str = "") -> list[str]:
    if not rows:
        return []
    descriptor = rows[0].DESCRIPTOR
    # Unit fields are shown with the amounts they are the unit of; in a row without such an
    # amount (a rate override's meter, what its rate is per) they are columns of their own.
    units_used = any(
        _UNIT_OF.get(f.name) in _UNITS or f.name in _SPEND_FIELDS for f in descriptor.fields
    )
    hidden = (_UNITS if units_used else frozenset()) | _JSON_ONLY
    columns = [
        f
        for f in descriptor.fields
        if not f.is_repeated and f.name not in hidden and f.message_type is None
    ]
    cells = [[_label(f.name) for f in columns]]
    cells += [[_value(row, f, meter, outer) for f in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
           for r in cells]  # fmt: skip
    for row in rows:
        for f in descriptor.fields:
            nested = list(getattr(row, f.name)) if f.is_repeated else []
            if nested and f.message_type is not None:
                out.append(f"{indent}  {_label(f.name)} of {getattr(row, columns[0].name)}:")
                out += _table(nested, meter, indent + "    ", str(getattr(row, "unit", "")))
    return out


def render(message: Message, indent: str = "") -> list[str]:
    """The lines that show ``message`` to a person (see the module doc)."""
    meter = str(getattr(message, "meter", ""))
    scalars = []
    tables: list[str] = []
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            items = list(getattr(message, field.name))
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                decimal = field.name in _AMOUNT_MAPS
                scalars += [
                    (f"{_label(field.name)}.{k}", format_micro(v) if decimal else v)
                    for k, v in getattr(message, field.name).items()
                ]
                continue
            if items and field.message_type is not None:
                tables += ["", f"{indent}{_label(field.name)}:"]
                tables += _table(items, meter, indent + "  ")
            elif items:
                scalars.append((_label(field.name), ", ".join(map(str, items))))
        elif field.message_type is not None:
            if message.HasField(field.name):
                tables += ["", f"{indent}{_label(field.name)}:"]
                tables += render(getattr(message, field.name), indent + "  ")
        elif _shown(message, field):
            scalars.append((_label(field.name), _value(message, field, meter)))
    width = max((len(k) for k, _ in scalars), default=0)
    return [f"{indent}{k.ljust(width)}  {v}".rstrip() for k, v in scalars] + tables
