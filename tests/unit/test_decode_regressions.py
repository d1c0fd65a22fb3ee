"""Issue 7, "no input can stop a partition": each message that used to crash the decoder.

Every case runs both decode paths (fast path + model, model only) through `_decode`.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import schemas.decode
from schemas.decode import (
    MAX_MESSAGE_BYTES,
    DecodedMessage,
    MessageError,
    decode_message,
    decode_message_reference,
)
from schemas.reading import (
    ALIASES,
)
from tests.unit.payloads import (
    SAMPLE_UPLOAD,
    SLEEP_DATA,
    cache_flush,
    envelope,
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
        fast_path = schemas.decode._fast_record if fast else None
        return schemas.decode._decode(value, max_readings, max_message_bytes, fast_path)

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


def assert_only_the_bad_reading_is_lost(decoded: DecodedMessage, reason: str, detail: str) -> None:
    assert [r.timestamp.second for r in decoded.records] == [0, 2]
    assert len(decoded.errors) == 1
    error = decoded.errors[0]
    assert (error.index, error.reason) == (1, reason)
    assert error.detail.startswith(detail), error.detail


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

    monkeypatch.setattr(schemas.decode, "_fast_record", refuse)
    monkeypatch.setattr(schemas.decode, "_model_record", refuse)
    value = b'{"data":[' + b",".join([b"{}"] * 1001) + b"]}"
    with pytest.raises(MessageError) as info:
        decode(value)
    assert info.value.reason == "too_many_readings"
