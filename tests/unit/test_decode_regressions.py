"""Issue 7, "no input can stop a partition": each message that used to crash the decoder.

Every case runs both decode paths *without* the last-resort guard (`_unguarded`), so a
pass means the cause is fixed, not that the guard turned the crash into "undecodable".
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic_core import PydanticCustomError

import schemas.decode
from schemas.clean import (
    CENT,
    SLOW_FIELD_DEPTH_MAX,
    quantize,
    shorten,
    sleep_field,
    sleep_hours,
    slow_field,
    to_party_id,
)
from schemas.decode import (
    MAX_MESSAGE_BYTES,
    DecodedMessage,
    MessageError,
    ReadingError,
    decode_message,
    decode_message_reference,
)
from schemas.reading import ALIASES
from tests.unit.hostile import FIELD_DEPTH_MAX, nested
from tests.unit.payloads import (
    SAMPLE_UPLOAD,
    SLEEP_DATA,
    cache_flush,
    envelope,
    relay,
    watch_reading,
)

Decoder = Callable[..., DecodedMessage]
SLOW_FIELDS = [
    "workoutData",
    "sleepData",
    "smData",
    "exerciseDailyData",
    "ydData",
    "exerciseWeekData",
    "exerciseDailyWeekData",
    "ydWeekData",
    "scientificSleepData",
    "kxsmData",
]
FIVE_THOUSAND_DIGITS = "1" * 5000


def _unguarded(fast: bool) -> Decoder:
    def decode(value: bytes, *, max_readings: int = 1000, max_message_bytes: int = 1 << 20) -> Any:
        return schemas.decode._decode(value, max_readings, max_message_bytes, fast)

    return decode


BOTH = pytest.mark.parametrize(
    "decode",
    [_unguarded(fast=True), _unguarded(fast=False)],
    ids=["fast", "reference"],
)


def with_field(reading: dict[str, Any], name: str, raw_json: bytes) -> bytes:
    """`reading` as JSON text with `"name": raw_json` appended (for values json.dumps
    cannot write, such as a list nested 1000 deep)."""
    text = json.dumps(reading).encode()
    return text[:-1] + b", " + json.dumps(name).encode() + b": " + raw_json + b"}"


def flush_with(bad_reading: bytes) -> bytes:
    """A cache flush: a valid reading, the bad one, another valid one."""
    first = json.dumps(watch_reading(timestamp="2025-05-31 21:18:00")).encode()
    last = json.dumps(watch_reading(timestamp="2025-05-31 21:18:02")).encode()
    return b'{"data":[' + first + b"," + bad_reading + b"," + last + b"]}"


def named(field: str) -> str:
    """How an error detail names a field sent under `field`."""
    primary = ALIASES[field]
    return field if field == primary else f"{field} (alias of {primary})"


def assert_only_the_bad_field_is_lost(decoded: DecodedMessage, field: str, detail: str) -> None:
    """The reading with the unusable slow field is stored without it (the legacy kept its
    vital signs), and the problem is reported so the message is dead-lettered."""
    assert [r.timestamp.second for r in decoded.records] == [0, 1, 2]
    assert decoded.errors == []
    assert len(decoded.dropped) == 1
    dropped = decoded.dropped[0]
    assert (dropped.index, dropped.field, dropped.reason) == (1, field, "invalid_slow_field")
    assert dropped.detail.startswith(detail), dropped.detail
    kept = decoded.records[1]
    assert kept.heart_rate == 66
    slow = (kept.sleep_data, kept.sleep, kept.exercise_daily_data, kept.exercise_week_data,
            kept.scientific_sleep_data, kept.workout_data)  # fmt: skip
    assert slow == (None,) * 6


def assert_only_the_bad_reading_is_lost(decoded: DecodedMessage, reason: str, detail: str) -> None:
    assert [r.timestamp.second for r in decoded.records] == [0, 2]
    assert len(decoded.errors) == 1
    error = decoded.errors[0]
    assert (error.index, error.reason) == (1, reason)
    assert error.detail.startswith(detail), error.detail


# --------------------------------------------------------------------------------------
# F1: a slow field nested 255-1023 deep made orjson.dumps raise TypeError. Since issue 8
# such a field is dropped and its reading kept (invalid_slow_field), as the legacy did.
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("depth", [SLOW_FIELD_DEPTH_MAX + 1, 255, 500, FIELD_DEPTH_MAX])
@pytest.mark.parametrize("field", SLOW_FIELDS)
def test_f1_deeply_nested_slow_field_object(decode: Decoder, field: str, depth: int) -> None:
    bad = with_field(watch_reading(timestamp="2025-05-31 21:18:01"), field, nested(depth))
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)), field, f"{named(field)}: nested deeper than 64 levels"
    )


@BOTH
@pytest.mark.parametrize("depth", [SLOW_FIELD_DEPTH_MAX + 1, 255, 500, 1023, 1024])
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("field", SLOW_FIELDS)
def test_f1_deeply_nested_slow_field_string(
    decode: Decoder, field: str, kind: str, depth: int
) -> None:
    text = nested(depth, kind=kind).decode()
    bad = json.dumps(watch_reading(timestamp="2025-05-31 21:18:01", **{field: text})).encode()
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)), field, f"{named(field)}: nested deeper than 64 levels"
    )


@BOTH
def test_f1_slow_field_beyond_the_parsers_depth_is_dropped(decode: Decoder) -> None:
    text = nested(1025).decode()  # orjson.loads itself refuses this one
    bad = json.dumps(watch_reading(timestamp="2025-05-31 21:18:01", workoutData=text)).encode()
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)), "workoutData", "workoutData: string is not valid JSON"
    )


@BOTH
def test_f1_a_message_deeper_than_the_parser_allows_is_invalid_json(decode: Decoder) -> None:
    bad = with_field(watch_reading(), "workoutData", nested(FIELD_DEPTH_MAX + 1))
    with pytest.raises(MessageError) as info:
        decode(flush_with(bad))
    assert info.value.reason == "invalid_json"
    assert "depth limit exceeded" in info.value.detail


@BOTH
@pytest.mark.parametrize("field", ["workoutData", "sleepData"])
def test_f1_slow_field_at_the_depth_limit_is_stored(decode: Decoder, field: str) -> None:
    text = nested(SLOW_FIELD_DEPTH_MAX, kind="object").decode()
    decoded = decode(json.dumps(envelope(watch_reading(**{field: text}))).encode())
    assert decoded.errors == []
    stored = decoded.records[0].workout_data or decoded.records[0].sleep_data
    assert stored == text


def test_f1_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"note": "[" * 500 + "{" * 500, "data": [{"a": "]]]"}]})
    assert slow_field(text) == orjson.dumps(json.loads(text)).decode()


# --------------------------------------------------------------------------------------
# F2: a list nested >= 989 deep in a scalar field made shorten()'s repr() recurse
# --------------------------------------------------------------------------------------

F2_CASES = [
    ("heart_rate", "schema_violation", "heart_rate: Input should be a valid integer (got [[[["),
    ("timestamp", "invalid_timestamp", "timestamp: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["),
    ("deviceSn", "schema_violation", "deviceSn: must be a string (got array [[[[[[[[[[[[[["),
    ("customerId", "schema_violation", "customerId: must be a number or numeric string (got"),
    ("upload_method", "schema_violation", "upload_method: must be a string (got array [[[[["),
    ("body_temperature", "schema_violation", "body_temperature: Decimal input should be"),
    ("latitude", "schema_violation", "latitude: Decimal input should be"),
    ("step", "schema_violation", "step: Input should be a valid integer (got [[[["),
    ("xlv", "schema_violation", "xlv (alias of heart_rate): Input should be a valid integer"),
]


@BOTH
@pytest.mark.parametrize("depth", [989, 1000, FIELD_DEPTH_MAX])
@pytest.mark.parametrize(("field", "reason", "detail"), F2_CASES, ids=[c[0] for c in F2_CASES])
def test_f2_deeply_nested_list_in_a_scalar_field(
    decode: Decoder, field: str, reason: str, detail: str, depth: int
) -> None:
    reading = watch_reading(timestamp="2025-05-31 21:18:01")
    reading.pop(ALIASES[field], None)  # else the primary name wins over an alias
    assert_only_the_bad_reading_is_lost(
        decode(flush_with(with_field(reading, field, nested(depth)))), reason, detail
    )


@BOTH
@pytest.mark.parametrize("field", ["customerId", "org_id", "userId"])
def test_f2_deeply_nested_list_as_an_envelope_id(decode: Decoder, field: str) -> None:
    value = b"{" + json.dumps(field).encode() + b":" + nested(1022) + b',"data":{}}'
    with pytest.raises(MessageError) as info:
        decode(value)
    assert info.value.reason == "invalid_envelope"
    assert info.value.detail.startswith(f"{field}: must be a number or numeric string")


def test_f2_shorten_is_bounded_for_any_value() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert shorten(deep) == "[" * 57 + "..."
    assert shorten({"a": [1, "b"]}) == repr({"a": [1, "b"]})
    assert shorten("x" * 10**7) == "'" + "x" * 56 + "..."
    assert shorten(list(range(10**6)), limit=20) == "[0, 1, 2, 3, 4, 5..."
    assert shorten(10**5000) == "<16610-bit integer>"


# --------------------------------------------------------------------------------------
# F3: a 5,000-digit number made int() raise ValueError (4300-digit limit)
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("field", ["customerId", "customer_id", "orgId", "userId"])
def test_f3_huge_customer_id_in_a_reading(decode: Decoder, field: str) -> None:
    bad = json.dumps(
        watch_reading(timestamp="2025-05-31 21:18:01", **{field: FIVE_THOUSAND_DIGITS})
    ).encode()
    assert_only_the_bad_reading_is_lost(
        decode(flush_with(bad)),
        "schema_violation",
        f"{named(field)}: {shorten(FIVE_THOUSAND_DIGITS)} (5000 digits) does not fit in 64 bits",
    )


@BOTH
@pytest.mark.parametrize("shape", ["envelope", "relay"])
def test_f3_huge_customer_id_in_the_envelope(decode: Decoder, shape: str) -> None:
    make = envelope if shape == "envelope" else relay
    message = make(watch_reading(), customerId=FIVE_THOUSAND_DIGITS)
    with pytest.raises(MessageError) as info:
        decode(json.dumps(message).encode())
    assert info.value.reason == "invalid_envelope"
    prefix = "customerId" if shape == "envelope" else "data.customerId"
    assert info.value.detail.endswith("(5000 digits) does not fit in 64 bits")
    assert info.value.detail.startswith(f"{prefix}: '1111")


@BOTH
@pytest.mark.parametrize("as_text", [True, False], ids=["string", "object"])
def test_f3_huge_sleep_end_timestamp(decode: Decoder, as_text: bool) -> None:
    sleep: Any = {"data": [{"startTimeStamp": 0, "endTimeStamp": FIVE_THOUSAND_DIGITS}]}
    if as_text:
        sleep = json.dumps(sleep)
    bad = json.dumps(watch_reading(timestamp="2025-05-31 21:18:01", sleepData=sleep)).encode()
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)),
        "sleepData",
        "sleepData: data[0].endTimeStamp '1111111111111111111111111111111111111111111111111",
    )
    assert decode(flush_with(bad)).dropped[0].detail.endswith("does not fit in 64 bits")


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("0" * 5000 + "7", 7),  # leading zeros are not digits that count
        ("-" + "0" * 30 + "12", -12),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_f3_long_ids_that_fit_are_read(sent: str, expected: int) -> None:
    assert to_party_id(sent) == expected


# --------------------------------------------------------------------------------------
# F4: a 34-digit sleep end time made quantize() raise decimal.InvalidOperation
# --------------------------------------------------------------------------------------

F4_SLEEP = '{"data":[{"startTimeStamp":0,"endTimeStamp":"1000000000000000000000000000000000"}]}'


@BOTH
@pytest.mark.parametrize("as_text", [True, False], ids=["string", "object"])
def test_f4_sleep_end_timestamp_beyond_decimal_precision(decode: Decoder, as_text: bool) -> None:
    sleep: Any = F4_SLEEP if as_text else json.loads(F4_SLEEP)
    bad = json.dumps(watch_reading(timestamp="2025-05-31 21:18:01", sleepData=sleep)).encode()
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)),
        "sleepData",
        "sleepData: data[0].endTimeStamp '1000000000000000000000000000000000' does not fit "
        "in 64 bits",
    )


@BOTH
def test_f4_sleep_totals_far_beyond_the_column_are_a_range_error(decode: Decoder) -> None:
    interval = {"startTimeStamp": -(2**63), "endTimeStamp": 2**63 - 1}  # the widest there is
    sleep = json.dumps({"data": [interval] * 1000})
    bad = json.dumps(watch_reading(timestamp="2025-05-31 21:18:01", sleepData=sleep)).encode()
    assert_only_the_bad_field_is_lost(
        decode(flush_with(bad)),
        "sleepData",
        "sleepData: intervals add up to 5124095576030431.00 h, more than 9999.99 h",
    )


def test_f4_sleep_hours_are_exact_integer_cents() -> None:
    widest = {"startTimeStamp": -(2**63), "endTimeStamp": 2**63 - 1}
    total_ms = 3 * (2**64 - 1)
    cents, rest = divmod(total_ms, 36_000)
    expected = Decimal(cents + (2 * rest >= 36_000)).scaleb(-2)
    assert sleep_hours({"data": [widest] * 3}) == expected


@pytest.mark.parametrize(
    "total_ms",
    [0, 1, 17_999, 18_000, 35_999, 13_920_000, 35_999_964_000, 35_999_982_000, 10**18 + 17],
)
def test_f4_sleep_hours_round_half_up_as_before(total_ms: int) -> None:
    hours = sleep_hours({"data": [{"startTimeStamp": 0, "endTimeStamp": total_ms}]})
    assert repr(hours) == repr(quantize(Decimal(total_ms) / 3_600_000, CENT))


def test_f4_sleep_field_raises_only_validation_errors() -> None:
    with pytest.raises(PydanticCustomError) as info:
        sleep_field(F4_SLEEP)
    assert info.value.type == "sleep_timestamp_range"


# --------------------------------------------------------------------------------------
# F9: a 100 MB message of 10^6 readings was parsed whole (+560 MB RSS)
# --------------------------------------------------------------------------------------


def hundred_mb_flush() -> bytes:
    reading = orjson.loads(SAMPLE_UPLOAD)["data"][0]
    one = orjson.dumps(reading)
    count = 100_000_000 // (len(one) + 1) + 1
    return b'{"data":[' + b",".join([one] * count) + b"]}"


@pytest.mark.parametrize("decode", [decode_message, decode_message_reference])
def test_f9_100mb_message_is_refused_without_parsing(
    decode: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = hundred_mb_flush()
    assert len(value) > 100_000_000

    def refuse(*args: Any) -> Any:
        raise AssertionError("a message over the byte cap was parsed")

    monkeypatch.setattr(schemas.decode.orjson, "loads", refuse)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(MessageError) as info:
            decode(value)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == "message_too_large"
    assert info.value.detail == f"{len(value)} bytes, at most {MAX_MESSAGE_BYTES} allowed"
    assert peak < 64_000  # bytes: nothing of the message was copied or parsed
    assert elapsed < 0.05


@BOTH
def test_f9_byte_cap_is_inclusive_and_configurable(decode: Decoder) -> None:
    assert decode(SAMPLE_UPLOAD, max_message_bytes=len(SAMPLE_UPLOAD)).records
    with pytest.raises(MessageError) as info:
        decode(SAMPLE_UPLOAD, max_message_bytes=len(SAMPLE_UPLOAD) - 1)
    assert (info.value.reason, info.value.detail) == (
        "message_too_large",
        f"{len(SAMPLE_UPLOAD)} bytes, at most {len(SAMPLE_UPLOAD) - 1} allowed",
    )


def test_f9_default_cap_holds_a_full_cache_flush() -> None:
    flush = orjson.dumps(envelope(cache_flush(1000, sleepData=SLEEP_DATA)))
    assert len(flush) <= MAX_MESSAGE_BYTES
    assert len(decode_message(flush).records) == 1000


@BOTH
def test_f9_too_many_readings_are_refused_before_any_record_is_built(
    decode: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("a reading was decoded")

    monkeypatch.setattr(schemas.decode, "fast_record", refuse)
    monkeypatch.setattr(schemas.decode, "_model_record", refuse)
    value = b'{"data":[' + b",".join([b"{}"] * 1001) + b"]}"
    with pytest.raises(MessageError) as info:
        decode(value)
    assert info.value.reason == "too_many_readings"


# --------------------------------------------------------------------------------------
# The last-resort guard: only for exceptions nobody has seen yet
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [decode_message, decode_message_reference])
def test_an_unexpected_exception_becomes_undecodable(
    decode: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any) -> Any:
        raise ZeroDivisionError("x" * 10_000)

    monkeypatch.setattr(schemas.decode, "_split", explode)
    monkeypatch.setattr(schemas.decode, "watch_records", explode)  # the one for a watch's
    with pytest.raises(MessageError) as info:
        decode(SAMPLE_UPLOAD)
    assert info.value.reason == "undecodable"
    assert info.value.detail.startswith("ZeroDivisionError: xxx")
    assert len(info.value.detail) == 500
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # the traceback is kept
    assert len(str(info.value)) < 600


def test_the_guard_lets_interrupts_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(schemas.decode, "_split", interrupt)
    monkeypatch.setattr(schemas.decode, "watch_records", interrupt)
    with pytest.raises(KeyboardInterrupt):
        decode_message(SAMPLE_UPLOAD)


def test_the_guard_keeps_message_errors_as_they_are() -> None:
    with pytest.raises(MessageError) as info:
        decode_message(b"[]")
    assert info.value.reason == "invalid_envelope"


def test_hostile_fields_reuse_the_existing_reading_reasons() -> None:
    # The consumer's metric labels: no new reason per reading, the detail names the field.
    message = envelope(watch_reading(customerId=FIVE_THOUSAND_DIGITS))
    (error,) = decode_message(json.dumps(message).encode()).errors
    assert error == ReadingError(0, "schema_violation", error.detail)
    assert error.detail.startswith("customerId: ")
