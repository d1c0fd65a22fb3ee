"""Value cleaning: what each wire value may be and what it becomes, as plain functions.

The pydantic models (`schemas.reading`) wrap these in validators and the fast path
(`schemas.fast`) calls them directly, so both judge a value by the very same code. A
refusal is a `PydanticCustomError`, whose message the dead letter quotes.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
from pydantic_core import PydanticCustomError

# ---------------------------------------------------------------------------------------
# Limits. Where the contract names none, the bound is the DB column's, so one absurd value
# is reported as a bad reading instead of failing the whole batch insert.
# ---------------------------------------------------------------------------------------
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))  # 19: a longer number cannot fit
_FLOAT_INT64_MIN = float(INT64_MIN)  # -2**63, exact
_FLOAT_INT64_END = -_FLOAT_INT64_MIN  # 2**63: the first float above INT64_MAX
HEART_RATE_MAX = 300
BLOOD_OXYGEN_MAX = 100
PRESSURE_MAX = 300
TEMPERATURE_MIN = Decimal(0)
TEMPERATURE_MAX = Decimal(50)
AMOUNT_MIN = Decimal(0)
AMOUNT_MAX = Decimal(1_000_000_000)  # distance/calorie: NUMERIC(12,2)
LATITUDE_MAX = Decimal(90)
LONGITUDE_MAX = Decimal(180)
ALTITUDE_MAX = Decimal(10_000_000)  # NUMERIC(10,2)
SLEEP_HOURS_MAX = Decimal("9999.99")  # NUMERIC(6,2)
_MS_PER_CENT_HOUR = 36_000  # 0.01 h
DEVICE_SN_MAX = 64
SLOW_FIELD_DEPTH_MAX = 64  # real payloads nest 3-4 levels; orjson.dumps stops at 254
UPLOAD_METHOD_MAX = 32
MIN_TIMESTAMP = datetime(2000, 1, 1)
MAX_TIMESTAMP = datetime(2101, 1, 1)  # exclusive: year 2100 is the last valid one

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")
_REPR_BITS_MAX = 4096  # far below the 4300-digit int/str conversion limit (~14k bits)

TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
# Printable ASCII (0x21-0x7E) except the quotes (0x22, 0x27), which break legacy SQL/logs.
DEVICE_SN_PATTERN = r"^[!#-&(-~]+$"

TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN, re.ASCII)
DEVICE_SN_RE = re.compile(DEVICE_SN_PATTERN, re.ASCII)
_ID_RE = re.compile(r"^[+-]?\d+$", re.ASCII)

# The uplinks watches send, as they send them ("4g" is old firmware's name of esim). The
# typed fast path admits exactly these; any other string is accepted too, normalized
# (`normalize_upload_method`). Which legacy ENUM value each is stored as is the sink's
# business (consumer.sinks.mysql_rows.legacy_upload_method, LEGACY_UPLOAD_METHOD_ENUM).
UPLOAD_METHODS = ("wifi", "bluetooth", "common_event", "esim", "4g")


def shorten(value: object, limit: int = 60) -> str:
    """repr() cut short: error details quote the offending value without flooding logs.

    The work is bounded by `limit`, not by the value: repr() of a list nested a thousand
    deep exceeds the interpreter's recursion limit, and of a 1 MB array copies all of it.
    """
    parts: list[str] = []
    _clipped_repr(value, parts, limit + 1)
    text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clipped_repr(value: object, parts: list[str], budget: int) -> int:
    """Append repr(value) to `parts` until about `budget` characters are written; return
    what is left. Every level writes its bracket first, so the recursion ends within
    `budget` levels however deep the value nests."""
    if budget <= 0:
        return 0
    if isinstance(value, list):
        parts.append("[")
        budget -= 1
        for i, item in enumerate(value):
            if budget <= 0:
                return 0
            if i:
                parts.append(", ")
                budget -= 2
            budget = _clipped_repr(item, parts, budget)
        parts.append("]")
        return budget - 1
    if isinstance(value, dict):
        parts.append("{")
        budget -= 1
        for i, (key, item) in enumerate(value.items()):
            if budget <= 0:
                return 0
            if i:
                parts.append(", ")
                budget -= 2
            budget = _clipped_repr(key, parts, budget)
            parts.append(": ")
            budget = _clipped_repr(item, parts, budget - 2)
        parts.append("}")
        return budget - 1
    if isinstance(value, str):
        text = repr(value[:budget])  # a prefix: repr() of 1 MB would copy 1 MB
    elif isinstance(value, int) and value.bit_length() > _REPR_BITS_MAX:
        text = f"<{value.bit_length()}-bit integer>"  # repr() refuses > 4300 digits
    else:
        text = repr(value)
    parts.append(text)
    return budget - len(text)


def json_kind(value: object) -> str:
    """The JSON type name of a decoded value, for messages a gateway author understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def quantize(value: Decimal, exp: Decimal) -> Decimal:
    """Round half up (as MySQL does on insert) and drop the sign of zero, so that the
    record, the row and the Redis string agree."""
    q = value.quantize(exp, rounding=ROUND_HALF_UP)
    return q.copy_abs() if not q and q.is_signed() else q


# ---------------------------------------------------------------------------------------
# Shared coercions (used by the models below and directly by the fast path).
# ---------------------------------------------------------------------------------------


def normalize_device_sn(value: object) -> str:
    """deviceSn as a clean key: Kafka key, Redis key and DB unique key all use it."""
    if value is None:
        raise PydanticCustomError("device_sn_missing", "is null")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PydanticCustomError(
            "device_sn_type",
            "must be a string (got {kind} {got})",
            {"kind": json_kind(value), "got": shorten(value)},
        )
    sn = value.strip()
    if not sn:
        raise PydanticCustomError("device_sn_missing", "is empty")
    if len(sn) > DEVICE_SN_MAX:
        raise PydanticCustomError(
            "device_sn_too_long",
            "{length} characters, at most {limit} allowed (got {got})",
            {"length": len(sn), "limit": DEVICE_SN_MAX, "got": shorten(sn)},
        )
    if not DEVICE_SN_RE.fullmatch(sn):
        raise PydanticCustomError(
            "device_sn_chars",
            "must be printable ASCII without whitespace or quotes (got {got})",
            {"got": shorten(sn)},
        )
    return sn


def parse_timestamp(value: object) -> datetime:
    """Device-local time exactly as sent. The model never defaults it: only a caller that
    knows a deterministic time (the consumer: the Kafka message's) may fill in a missing
    one (`decode_message(default_timestamp=...)`), since a server clock breaks replays."""
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp_type", "{got} is not a yyyy-MM-dd HH:mm:ss string", {"got": shorten(value)}
        )
    if TIMESTAMP_RE.fullmatch(value):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
                return ts
            raise PydanticCustomError(
                "timestamp_range",
                "{got} is outside 2000-01-01 00:00:00 .. 2100-12-31 23:59:59",
                {"got": shorten(value)},
            )
    raise PydanticCustomError(
        "timestamp_format", "{got} is not yyyy-MM-dd HH:mm:ss", {"got": shorten(value)}
    )


def to_party_id(value: object) -> int | None:
    """customer/org/user ids arrive as numbers or numeric strings; blank means unknown,
    and so does 0: the legacy firmware sends `"customerId": "0"` for "not known here"
    (docs/legacy-compatibility.md), which the device binding must fill, not keep."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not _ID_RE.fullmatch(text):
            raise PydanticCustomError(
                "id_parsing", "{got} is not a numeric id", {"got": shorten(value)}
            )
        # Count the digits before int(): it refuses more than 4300 with a ValueError.
        digits = text.lstrip("+-").lstrip("0")
        if len(digits) > _INT64_DIGITS:
            raise PydanticCustomError(
                "id_range",
                "{got} ({digits} digits) does not fit in 64 bits",
                {"got": shorten(text), "digits": len(digits)},
            )
        number = -int(digits or "0") if text[0] == "-" else int(digits or "0")
    elif isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("id_fraction", "{got} is not a whole number", {"got": value})
        if not _FLOAT_INT64_MIN <= value < _FLOAT_INT64_END:
            # Before int(): 1e308 would become a 309-digit id in the message.
            raise PydanticCustomError("id_range", "{got} does not fit in 64 bits", {"got": value})
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise PydanticCustomError(
            "id_type",
            "must be a number or numeric string (got {kind} {got})",
            {"kind": json_kind(value), "got": shorten(value)},
        )
    if not INT64_MIN <= number <= INT64_MAX:
        raise PydanticCustomError("id_range", "{got} does not fit in 64 bits", {"got": number})
    return number or None


def normalize_upload_method(value: object) -> str | None:
    """The uplink as sent, trimmed, lower-cased and cut to 32 characters. Never mapped
    ("4g" stays "4g"): the legacy column `upload_method_raw` holds this normalized value
    (what the device said, up to case and blanks), and the mapping to the legacy ENUM is
    the sink's (`legacy_upload_method`). Any string is accepted, so a new firmware's
    uplink never costs a reading."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError(
            "upload_method_type",
            "must be a string (got {kind} {got})",
            {"kind": json_kind(value), "got": shorten(value)},
        )
    method = value.strip().lower()
    if not method:
        return None
    return method[:UPLOAD_METHOD_MAX]


def _parse_slow(value: object) -> Any:
    """The JSON value a slow field carries (None for absent/"null"/blank)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise PydanticCustomError(
                "slow_field_json",
                "string is not valid JSON ({error}): {got}",
                {"error": str(exc), "got": shorten(value)},
            ) from None
        # Each level opens a bracket: most texts are too short or flat to need the walk.
        if len(value) <= 2 * SLOW_FIELD_DEPTH_MAX or (
            value.count("[") + value.count("{") <= SLOW_FIELD_DEPTH_MAX
        ):
            return parsed
    elif isinstance(value, dict | list):
        parsed = value  # a gateway that already decoded the JSON: stored re-encoded
    else:
        raise PydanticCustomError(
            "slow_field_type",
            "must be a JSON-encoded string, object or array (got {kind} {got})",
            {"kind": json_kind(value), "got": shorten(value)},
        )
    if _nests_deeper(parsed, SLOW_FIELD_DEPTH_MAX):
        raise PydanticCustomError(
            "slow_field_depth",
            "nested deeper than {limit} levels",
            {"limit": SLOW_FIELD_DEPTH_MAX},
        )
    return parsed


def _nests_deeper(value: object, limit: int) -> bool:
    """Whether arrays/objects in `value` nest more than `limit` levels deep.

    Iterative, since the value may be a thousand levels deep, and each container is seen
    once. orjson.dumps() refuses more than 254 levels with a TypeError (older versions
    overflow the C stack instead), so slow fields must be checked before re-encoding.
    """
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def slow_field(value: object) -> str | None:
    """A slow field as compact JSON text, the form the JSON columns and replays expect."""
    parsed = _parse_slow(value)
    return None if parsed is None else orjson.dumps(parsed).decode()


def _timestamp_ms(interval: dict[Any, Any], name: str, index: int) -> int | None:
    """A millisecond timestamp as the legacy reader (a Java long) took it: an integer or a
    string of ASCII digits. Anything else is None and skips the interval; a number beyond
    64 bits is refused instead, being no time at all (its digits are counted before int(),
    which raises on more than 4300)."""
    value = interval.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        digits = value.lstrip("0")
        number = int(digits or "0") if len(digits) <= _INT64_DIGITS else INT64_MAX + 1
    else:
        return None
    if not INT64_MIN <= number <= INT64_MAX:
        raise PydanticCustomError(
            "sleep_timestamp_range",
            "data[{index}].{name} {got} does not fit in 64 bits",
            {"index": index, "name": name, "got": shorten(value)},
        )
    return number


def sleep_hours(parsed: object) -> Decimal | None:
    """Hours slept: the sum of the sleepData intervals (ms), 2 dp. Intervals without two
    millisecond timestamps, or ending before they start, are skipped; a timestamp beyond
    64 bits raises PydanticCustomError."""
    if not isinstance(parsed, dict):
        return None
    intervals = parsed.get("data")
    if not isinstance(intervals, list):
        return None
    total_ms = 0
    for index, interval in enumerate(intervals):
        if isinstance(interval, dict):
            start = _timestamp_ms(interval, "startTimeStamp", index)
            end = _timestamp_ms(interval, "endTimeStamp", index)
            if start is not None and end is not None and end > start:
                total_ms += end - start
    # Cents by integer division, rounded half up, which cannot fail at any size: the
    # Decimal division used before kept 28 digits, and quantize() then raised
    # InvalidOperation on a total of 10^33 ms.
    cents, rest = divmod(total_ms, _MS_PER_CENT_HOUR)
    if 2 * rest >= _MS_PER_CENT_HOUR:
        cents += 1
    return Decimal(cents).scaleb(-2)


def sleep_field(value: object) -> tuple[str | None, Decimal | None]:
    """sleepData as compact JSON text plus the hours it adds up to."""
    parsed = _parse_slow(value)
    if parsed is None:
        return None, None
    hours = sleep_hours(parsed)
    if hours is not None and hours > SLEEP_HOURS_MAX:
        raise PydanticCustomError(
            "sleep_range",
            "intervals add up to {hours} h, more than {limit} h",
            {"hours": str(hours), "limit": str(SLEEP_HOURS_MAX)},
        )
    return orjson.dumps(parsed).decode(), hours


# What the decoder accepts and what the JSON Schema says must be the same set of payloads
# (tests/unit/test_schema_agreement.py). So numeric strings follow a grammar stated here,
# ASCII only, instead of whatever int()/Decimal() take ("6_6", Arabic-Indic digits), and
# each field's JSON Schema spells out the same grammar and range as a pattern.
_INT_TEXT = re.compile(r"([+-]?[0-9]+)(?:\.0*)?", re.ASCII)  # "78", "+78", "78.0"
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:s?nan|inf|infinity)", re.ASCII | re.IGNORECASE)


def int_input(value: object) -> object:
    """Numbers as they come; numeric strings (surrounding blanks ignored, a zero fraction
    allowed) as their digits; a blank string means "not sent"."""
    if isinstance(value, bool):  # pydantic's lax int would take True as 1
        raise PydanticCustomError(
            "int_type", "Input should be a valid integer (got {got})", {"got": shorten(value)}
        )
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        match = _INT_TEXT.fullmatch(text)
        if match is None:
            raise PydanticCustomError(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer (got {got})",
                {"got": shorten(value)},
            )
        return match.group(1)  # pydantic counts the digits before converting
    return value


def decimal_input(value: object) -> object:
    """Decimal text (blanks around it ignored, exponent allowed); a blank string means "not
    sent". NaN/Infinity pass on, for pydantic's own "finite number" error."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if _DECIMAL_TEXT.fullmatch(text) or _NOT_FINITE.fullmatch(text):
        return text
    raise PydanticCustomError(
        "decimal_parsing", "Input should be a valid decimal (got {got})", {"got": shorten(value)}
    )


def cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize(value, CENT)


def micros(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize(value, MICRO)
