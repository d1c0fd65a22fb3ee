"""Issue 8: what the legacy upload path kept, healthstream keeps (no services).

A reading without a timestamp takes the Kafka message time; upload_method is kept as sent
and mapped to the ENUM by the sink only; an unusable slow field loses only itself; zeros
stay zeros; a message of several devices stays a dead letter with a reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from consumer.observe.prometheus import DEAD_LETTER_REASONS, ReplicaCollector
from consumer.pipeline.intake import DeviceClock, read_message
from consumer.pipeline.ledger import Ledger
from consumer.settings import ConfigError, load_settings
from consumer.sinks.mysql_rows import health_row, render_health_values
from consumer.sinks.redis_hash import legacy_hash
from schemas.decode import DecodedMessage, decode_message, decode_message_reference
from schemas.record import HealthRecord
from tests.unit.payloads import ABSENT, SAMPLE_SN, envelope, watch_reading

Decoder = Callable[..., DecodedMessage]
BOTH = pytest.mark.parametrize(
    "decode", [decode_message, decode_message_reference], ids=["fast", "reference"]
)
KAFKA_TIME = dt.datetime(2025, 6, 3, 7, 30, 0)
KAFKA_MS = int(KAFKA_TIME.replace(tzinfo=dt.UTC).timestamp() * 1000) + 789  # ms are dropped
UTC_CLOCK = DeviceClock(ZoneInfo("UTC"))


def read(
    body: Any,
    key: bytes | None = SAMPLE_SN.encode(),
    clock: Any = UTC_CLOCK,
    future_horizon: dt.timedelta | None = None,
) -> Any:
    return read_message(
        7, KAFKA_MS, key, orjson.dumps(body), 1000, clock=clock, future_horizon=future_horizon
    )


# --------------------------------------------------------------------------------------
# A reading without a timestamp
# --------------------------------------------------------------------------------------


def test_device_clock_gives_naive_local_whole_seconds() -> None:
    assert UTC_CLOCK(KAFKA_MS) == KAFKA_TIME
    shanghai = DeviceClock(ZoneInfo("Asia/Shanghai"))
    assert shanghai(KAFKA_MS) == dt.datetime(2025, 6, 3, 15, 30, 0)
    assert shanghai(KAFKA_MS + 1000) == dt.datetime(2025, 6, 3, 15, 30, 1)
    assert shanghai(KAFKA_MS) == dt.datetime(2025, 6, 3, 15, 30, 0)  # after a cache miss
    assert UTC_CLOCK(-1) is None and UTC_CLOCK(0) is None  # librdkafka: no timestamp
    assert UTC_CLOCK(2**62) is None  # beyond datetime: no clock rather than a crash


@pytest.mark.parametrize("missing", [ABSENT, None, "", "  "])
def test_a_reading_without_timestamp_takes_the_message_time(missing: Any) -> None:
    pending = read(envelope(watch_reading(timestamp=missing)))
    assert pending.dead_letter is None
    assert [r.timestamp for r in pending.records] == [KAFKA_TIME]
    assert pending.timestamps_from_kafka == 1
    again = read(envelope(watch_reading(timestamp=missing)))
    assert again.records == pending.records  # a replay lands on the same row


def test_the_message_time_fills_only_the_readings_that_lack_one() -> None:
    flush = [watch_reading(timestamp=ABSENT), watch_reading(), watch_reading(cjsj=None)]
    flush[2].pop("timestamp")
    pending = read(envelope(flush))
    # The second reading without a time gets one second more (issue 18, S2): distinct.
    assert [r.timestamp for r in pending.records] == [
        KAFKA_TIME, dt.datetime(2025, 5, 31, 21, 18, 24), KAFKA_TIME + dt.timedelta(seconds=1),
    ]  # fmt: skip
    assert pending.timestamps_from_kafka == 2


@pytest.mark.parametrize(("after_s", "stored"), [(-1, True), (0, True), (1, False)])
def test_a_reading_beyond_the_future_horizon_is_dead_lettered(after_s: int, stored: bool) -> None:
    """Issue 18 S7 at the horizon - 1 s, the horizon and + 1 s (judged against the message
    time, so a replay judges the same)."""
    horizon = dt.timedelta(days=1)
    ts = KAFKA_TIME + horizon + dt.timedelta(seconds=after_s)
    future = watch_reading(timestamp=f"{ts:%Y-%m-%d %H:%M:%S}")
    pending = read(envelope([watch_reading(), future]), future_horizon=horizon)
    assert len(pending.records) == (2 if stored else 1)
    if stored:
        assert pending.dead_letter is None
    else:
        assert pending.dead_letter is not None
        assert pending.dead_letter.reason == "future_timestamp"
        assert f"{ts:%Y-%m-%d %H:%M:%S}" in pending.dead_letter.detail


@pytest.mark.parametrize("sent", ["2025-13-01 00:00:00", "yesterday", 1748726304000, [1]])
def test_a_present_but_invalid_timestamp_stays_an_error(sent: Any) -> None:
    pending = read(envelope(watch_reading(timestamp=sent)))
    assert pending.records == [] and pending.timestamps_from_kafka == 0
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "invalid_timestamp"


def test_without_a_clock_a_missing_timestamp_is_an_error_as_before() -> None:
    pending = read(envelope(watch_reading(timestamp=ABSENT)), clock=None)
    assert pending.records == []
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "invalid_timestamp"
    assert "timestamp: missing" in pending.dead_letter.detail


@BOTH
def test_decoders_default_only_when_asked(decode: Decoder) -> None:
    value = orjson.dumps(envelope(watch_reading(timestamp=ABSENT)))
    assert decode(value).errors[0].reason == "invalid_timestamp"
    decoded = decode(value, default_timestamp=KAFKA_TIME)
    assert ([r.timestamp for r in decoded.records], decoded.timestamps_defaulted) == (
        [KAFKA_TIME], 1,
    )  # fmt: skip
    # A message time outside the contract's years is no better than none.
    old = decode(value, default_timestamp=dt.datetime(1970, 1, 1, 0, 0, 1))
    assert old.records == [] and old.errors[0].reason == "invalid_timestamp"


def test_device_timezone_is_validated_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICE_TIMEZONE", raising=False)
    assert load_settings().device_timezone == "UTC"
    monkeypatch.setenv("DEVICE_TIMEZONE", "Asia/Shanghai")
    assert load_settings().device_timezone == "Asia/Shanghai"
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        monkeypatch.setenv("DEVICE_TIMEZONE", bad)
        with pytest.raises(ConfigError, match=r"DEVICE_TIMEZONE: .*not an IANA time zone"):
            load_settings()


def test_timestamps_from_kafka_are_counted_and_exported() -> None:
    ledger = Ledger()
    ledger.consumed(3, 5, 0, 2)
    ledger.consumed(1, 1, 0, 1)
    assert ledger.totals().timestamps_from_kafka == 3
    families = {f.name: f for f in ReplicaCollector(None, ledger)._counters()}  # type: ignore[arg-type]
    family = families["health_consumer_readings_timestamp_from_kafka"]
    assert [(s.name, s.value) for s in family.samples if s.name.endswith("_total")] == [
        ("health_consumer_readings_timestamp_from_kafka_total", 3)
    ]
    assert "invalid_slow_field" in DEAD_LETTER_REASONS


# --------------------------------------------------------------------------------------
# upload_method: as sent in the record and upload_method_raw, the ENUM in the DB and Redis
# --------------------------------------------------------------------------------------

METHODS = [
    ("4g", "4g", "esim"), ("4G", "4g", "esim"), ("esim", "esim", "esim"),
    ("WiFi", "wifi", "wifi"), ("bluetooth", "bluetooth", "bluetooth"),
    ("common_event", "common_event", "common_event"), ("LoRaWAN", "lorawan", "common_event"),
    ("100%", "100%", "common_event"), (ABSENT, None, "wifi"), ("", None, "wifi"),
    (None, None, "wifi"),
]  # fmt: skip


@BOTH
@pytest.mark.parametrize(("sent", "kept", "stored"), METHODS)
def test_upload_method_is_kept_as_sent_and_mapped_by_the_sinks_alike(
    decode: Decoder, sent: Any, kept: str | None, stored: str
) -> None:
    reading = watch_reading(upload_method=sent)
    (record,) = decode(orjson.dumps(envelope(reading))).records
    assert record.upload_method == kept
    row = health_row(record)
    assert (row["upload_method"], row["upload_method_raw"]) == (stored, kept)
    assert legacy_hash(record)["uploadMethod"] == stored  # Redis and the DB agree
    assert f"'{stored}'," in render_health_values([record])


# --------------------------------------------------------------------------------------
# A slow field that cannot be stored
# --------------------------------------------------------------------------------------

DEEP_OBJECT: Any = []
for _ in range(70):
    DEEP_OBJECT = [DEEP_OBJECT]  # a gateway that already decoded the JSON, 71 deep
BAD_SLOW = [
    ("sleepData", "{not json", "string is not valid JSON"),
    ("smData", "{not json", "string is not valid JSON"),
    ("exerciseDailyData", "[1,", "string is not valid JSON"),
    ("exerciseWeekData", "nope", "string is not valid JSON"),
    ("exerciseDailyWeekData", "{]", "string is not valid JSON"),
    ("scientificSleepData", "{'a': 1}", "string is not valid JSON"),
    ("workoutData", "[" * 100 + "]" * 100, "nested deeper than 64 levels"),
    ("workoutData", {"a": DEEP_OBJECT}, "nested deeper than 64 levels"),
]


@pytest.mark.parametrize(("name", "sent", "problem"), BAD_SLOW)
def test_an_unusable_slow_field_loses_only_itself(name: str, sent: Any, problem: str) -> None:
    flush = [watch_reading(timestamp=f"2025-05-31 21:18:0{i}") for i in range(3)]
    flush[1][name] = sent
    flush[1]["exerciseDailyData" if name != "exerciseDailyData" else "workoutData"] = "{}"
    pending = read(envelope(flush))
    assert [r.timestamp.second for r in pending.records] == [0, 1, 2]
    kept = pending.records[1]
    assert (kept.heart_rate, kept.blood_oxygen, kept.temperature) == (66, 98, Decimal("36.50"))
    assert "{}" in (kept.exercise_daily_data, kept.workout_data)  # the good slow field stays
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "invalid_slow_field"
    detail = pending.dead_letter.detail
    assert detail.startswith("1 field(s) dropped from stored readings: reading[1] ")
    assert f"invalid_slow_field: {name}" in detail and problem in detail


def test_rejected_readings_and_dropped_fields_make_one_dead_letter() -> None:
    flush = [watch_reading(timestamp=f"2025-05-31 21:18:0{i}") for i in range(4)]
    flush[1]["sleepData"] = "{oops"
    flush[2]["heart_rate"] = 999
    pending = read(envelope(flush))
    assert [r.timestamp.second for r in pending.records] == [0, 1, 3]
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "invalid_slow_field"  # the first problem's
    detail = pending.dead_letter.detail
    assert detail.startswith("1 of 4 readings invalid, 1 field(s) dropped from stored readings")
    assert detail.index("reading[1] invalid_slow_field: sleepData") < detail.index(
        "reading[2] schema_violation: heart_rate"
    )


@BOTH
def test_a_slow_field_of_the_wrong_type_still_rejects_the_reading(decode: Decoder) -> None:
    decoded = decode(orjson.dumps(envelope(watch_reading(workoutData=42))))
    assert decoded.records == [] and decoded.dropped == []
    assert decoded.errors[0].reason == "schema_violation"


@BOTH
def test_a_reading_with_other_errors_is_rejected_with_all_of_them(decode: Decoder) -> None:
    decoded = decode(orjson.dumps(envelope(watch_reading(sleepData="{x", heart_rate=999))))
    assert decoded.records == [] and decoded.dropped == []
    assert [e.reason for e in decoded.errors] == ["schema_violation"]
    assert "sleepData" in decoded.errors[0].detail and "heart_rate" in decoded.errors[0].detail


# --------------------------------------------------------------------------------------
# Zeros and numeric strings are stored as sent
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("zero", [0, "0", "0.0", 0.0, "-0"])
def test_a_numeric_zero_is_stored_as_zero_not_null(decode: Decoder, zero: Any) -> None:
    fields = ("altitude", "distance", "calorie", "latitude", "longitude")
    reading = watch_reading(**dict.fromkeys(fields, zero))
    (record,) = decode(orjson.dumps(envelope(reading))).records
    assert all(getattr(record, f) == 0 and getattr(record, f) is not None for f in fields)
    row = health_row(record)
    assert [row[f] for f in fields] == [0] * 5
    # latitude, longitude, altitude, distance, calorie in the rendered INSERT: not NULL
    assert ",0.000000,0.000000,0.00,0.00,0.00," in render_health_values([record])
    redis = legacy_hash(record)
    assert [redis[f] for f in fields] == ["0", "0.0", "0.0", "0", "0"]


@BOTH
def test_integer_fields_sent_as_numeric_strings(decode: Decoder) -> None:
    reading = watch_reading(
        heart_rate="78", blood_oxygen=" 97 ", step="3512", stress="35.0",
        blood_pressure_systolic="+120", blood_pressure_diastolic="80",
    )  # fmt: skip
    (record,) = decode(orjson.dumps(envelope(reading))).records
    got = (record.heart_rate, record.blood_oxygen, record.step, record.stress,
           record.pressure_high, record.pressure_low)  # fmt: skip
    assert got == (78, 97, 3512, 35, 120, 80)


# --------------------------------------------------------------------------------------
# Readings of several devices in one message: a dead letter with a reason (the gateway
# splits uploads per device; the consumer only sees a message that bypassed it)
# --------------------------------------------------------------------------------------


def _two_devices() -> Any:
    return envelope([watch_reading(), watch_reading(deviceSn="OTHER0000000001")])


def test_a_keyed_message_with_several_devices_is_a_key_mismatch() -> None:
    pending = read(_two_devices())
    assert pending.records == []
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "key_mismatch"
    assert "OTHER0000000001" in pending.dead_letter.detail


def test_an_unkeyed_message_with_several_devices_is_dead_lettered() -> None:
    pending = read(_two_devices(), key=None)
    assert pending.records == []
    assert pending.dead_letter is not None
    assert pending.dead_letter.reason == "unkeyed_mixed_devices"
    assert pending.dead_letter.detail == (
        f"no key and readings of 2 devices: {SAMPLE_SN}, OTHER0000000001"
    )


def test_an_unkeyed_message_of_one_device_is_stored() -> None:
    pending = read(envelope([watch_reading(), watch_reading(timestamp=ABSENT)]), key=None)
    assert pending.dead_letter is None and pending.unkeyed
    assert {r.device_sn for r in pending.records} == {SAMPLE_SN}
    assert isinstance(pending.records[0], HealthRecord)
