"""JSON Schema fragments of the contract: each one states the grammar and range that
`schemas.clean` accepts, so the published schema and the decoder agree on every payload
(tests/unit/test_schema_agreement.py). `schemas.reading` attaches them to the model
fields; `schemas.export` writes the result.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices

from schemas.clean import DEVICE_SN_MAX, DEVICE_SN_PATTERN, INT64_MAX, INT64_MIN, UPLOAD_METHODS


def numerals_up_to(limit: int) -> str:
    """A regex (unanchored) of the decimal numerals 0..limit without leading zeros."""
    digits = str(limit)
    size = len(digits)
    alternatives = ["0"]
    if size > 1:
        alternatives.append("[1-9]" if size == 2 else f"[1-9][0-9]{{0,{size - 2}}}")
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = size - i - 1
            tail = "" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"
            alternatives.append(f"{digits[:i]}[{low}-{int(digit) - 1}]{tail}")
    if limit > 0:
        alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


def int_schema(high: int) -> dict[str, Any]:
    """0..high as a JSON number or as text in the grammar of `_int_input`."""
    text = rf"(?:\+?0*{numerals_up_to(high)}|-0+)(?:\.0*)?"
    return {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": high},
            {"type": "string", "pattern": rf"^\s*(?:{text})?\s*$"},
            {"type": "null"},
        ]
    }


def decimal_schema(low: Decimal, high: Decimal) -> dict[str, Any]:
    """[low, high] (integer bounds; low is 0 or -high) as a JSON number or as decimal text.

    Plain text ("36.5") is range-checked by the pattern. Exponent text ("3.65e1") is
    accepted by the pattern but its range only by the consumer: a regex for that is
    possible but unreadable, and no device sends it.
    """
    top = int(high)
    magnitude = rf"0*{numerals_up_to(top - 1)}(?:\.[0-9]*)?|0*{top}(?:\.0*)?|\.[0-9]+"
    signed = rf"[+-]?(?:{magnitude})"
    unsigned = rf"\+?(?:{magnitude})|-(?:0+(?:\.0*)?|\.0+)"  # only zero may carry a minus
    plain = signed if low < 0 else unsigned
    exponent = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+"
    return {
        "anyOf": [
            {"type": "number", "minimum": int(low), "maximum": top},
            {"type": "string", "pattern": rf"^\s*(?:{plain}|{exponent})?\s*$"},
            {"type": "null"},
        ]
    }


DEVICE_SN_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            # Surrounding whitespace is stripped before the checks.
            "pattern": rf"^\s*{DEVICE_SN_PATTERN[1:-2]}{{1,{DEVICE_SN_MAX}}}\s*$",
        },
        # Unbounded here: a 64-digit bound does not fit the 64-bit integers JSON tools
        # use. The consumer refuses a number of more than 64 characters.
        {"type": "integer"},
    ]
}

# The schema's timestamp pattern also checks the calendar (month lengths, leap years in
# 2000..2100), which the decoder does with datetime.fromisoformat().
_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR = r"20(?:0[048]|[2468][048]|[13579][26])"
TIMESTAMP_SCHEMA_PATTERN = (
    rf"^(?:(?:20[0-9]{{2}}|2100)-{_DAY}|{_LEAP_YEAR}-02-29)"
    r" (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
)
TIMESTAMP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 19,  # with the pattern: no trailing newline, which $ would allow
    "maxLength": 19,
    "pattern": TIMESTAMP_SCHEMA_PATTERN,
    "examples": ["2025-05-31 21:18:24"],
}

PARTY_ID_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {
            "type": "string",
            "pattern": rf"^\s*(?:\+?0*{numerals_up_to(INT64_MAX)}"
            rf"|-0*{numerals_up_to(-INT64_MIN)})?\s*$",
        },
        {"type": "null"},
    ]
}

UPLOAD_METHOD_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "examples": list(UPLOAD_METHODS)}, {"type": "null"}]
}

SLOW_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array"}, {"type": "null"}]
}


def document_aliases(schema: dict[str, Any], model: type[Any]) -> None:
    """List every accepted alias as its own property: pydantic's schema only shows the
    first name of an AliasChoices, and gateway authors validate against this file."""
    properties: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.pop("required", [])
    documented: dict[str, Any] = {}
    alternatives: list[dict[str, Any]] = []
    still_required: list[str] = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        names = (
            [c for c in alias.choices if isinstance(c, str)]
            if isinstance(alias, AliasChoices)
            else [name]
        )
        primary = names[0]
        documented[primary] = {**properties[primary], "title": primary}
        for other in names[1:]:
            twin = copy.deepcopy(properties[primary])
            twin["title"] = other
            twin["description"] = f"Alias of `{primary}`."
            documented[other] = twin
        if primary in required:
            if len(names) == 1:
                still_required.append(primary)
            else:
                alternatives.append({"anyOf": [{"required": [n]} for n in names]})
    schema["properties"] = documented
    if still_required:
        schema["required"] = still_required
    if alternatives:
        schema["allOf"] = alternatives
