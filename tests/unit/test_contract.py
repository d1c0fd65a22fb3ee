"""The wire contract: what real watches, gateways and relays send must decode as the legacy
system read it, and what it rejected must be rejected with a message naming the field.

Every case runs through both `decode_message` (fast path + model) and
`decode_message_reference` (model only); hypothesis then checks the two agree on
arbitrary, mostly malformed, readings - hostile values included (tests/unit/hostile.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.decode
from consumer.sinks.redis_hash import legacy_hash
from schemas.clean import (
    ALTITUDE_MAX,
    AMOUNT_MAX,
    AMOUNT_MIN,
    BLOOD_OXYGEN_MAX,
    HEART_RATE_MAX,
    INT32_MAX,
    LATITUDE_MAX,
    LONGITUDE_MAX,
    PRESSURE_MAX,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
)
from schemas.decode import (
    DecodedMessage,
    MessageError,
    ReadingError,
    decode_message,
    decode_message_reference,
)
from schemas.reading import ALIASES
from schemas.record import HealthRecord
from tests.unit.hostile import SMALL_HOSTILE, default_recursion_limit
from tests.unit.hostile import encode as encode_hostile
from tests.unit.payloads import (
    ABSENT,
    EXERCISE_DAILY_DATA,
    EXERCISE_WEEK_DATA,
    SAMPLE_SN,
    SAMPLE_UPLOAD,
    SCIENTIFIC_SLEEP_DATA,
    SLEEP_DATA,
    SLEEP_HOURS,
    WORKOUT_DATA,
    cache_flush,
    camel_reading,
    encode,
    envelope,
    legacy_reading,
    relay,
    watch_reading,
)

Decoder = Callable[..., DecodedMessage]
BOTH = pytest.mark.parametrize(
    "decode", [decode_message, decode_message_reference], ids=["fast", "reference"]
)
TS = datetime(2025, 5, 31, 21, 18, 24)


def only_record(decode: Decoder, message: Any) -> HealthRecord:
    decoded = decode(message if isinstance(message, bytes) else encode(message))
    assert decoded.errors == []
    assert len(decoded.records) == 1
    return decoded.records[0]


def only_error(decode: Decoder, message: Any) -> ReadingError:
    decoded = decode(encode(message))
    assert decoded.records == []
    assert len(decoded.errors) == 1
    return decoded.errors[0]


def message_error(decode: Decoder, value: bytes, **kwargs: Any) -> MessageError:
    with pytest.raises(MessageError) as info:
        decode(value, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------
# The real sample and the record it becomes
# --------------------------------------------------------------------------------------

SAMPLE_RECORD = HealthRecord(
    device_sn=SAMPLE_SN,
    timestamp=TS,
    heart_rate=66,
    blood_oxygen=98,
    temperature=Decimal("0.00"),
    pressure_high=107,
    pressure_low=74,
    stress=0,
    step=0,
    distance=Decimal("0.00"),
    calorie=Decimal("0.00"),
    latitude=Decimal("0.000000"),
    longitude=Decimal("0.000000"),
    altitude=Decimal("0.00"),
    upload_method="wifi",
)


@BOTH
def test_real_watch_upload_becomes_the_legacy_record(decode: Decoder) -> None:
    record = only_record(decode, SAMPLE_UPLOAD)
    assert repr(record) == repr(SAMPLE_RECORD)  # repr: also pins the Decimal scale
    assert type(record) is HealthRecord


@BOTH
def test_worn_watch_reading_keeps_text_values_at_db_scale(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading()))
    assert str(record.temperature) == "36.50"
    assert str(record.distance) == "2.40"
    assert str(record.calorie) == "140.50"
    assert str(record.latitude) == "22.543096"
    assert str(record.longitude) == "114.057865"
    assert str(record.altitude) == "12.00"
    assert record.step == 3512
    assert record.stress == 35


@BOTH
def test_zero_vitals_mean_not_measured_and_are_kept(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading(heart_rate=0, blood_oxygen=0)))
    assert (record.heart_rate, record.blood_oxygen) == (0, 0)


@BOTH
def test_absent_fields_are_none(decode: Decoder) -> None:
    record = only_record(decode, {"deviceSn": SAMPLE_SN, "timestamp": "2025-05-31 21:18:24"})
    assert record == HealthRecord(device_sn=SAMPLE_SN, timestamp=TS)


def test_record_is_a_frozen_slots_dataclass() -> None:
    record = decode_message(SAMPLE_UPLOAD).records[0]
    assert dataclasses.is_dataclass(record)
    assert not hasattr(record, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.heart_rate = 70  # type: ignore[misc]
    assert hash(record) == hash(SAMPLE_RECORD)


# --------------------------------------------------------------------------------------
# Envelopes
# --------------------------------------------------------------------------------------

ENVELOPES = {
    "single": envelope(watch_reading()),
    "array": envelope([watch_reading()]),
    "relay": relay(watch_reading()),
    "relay_array": relay([watch_reading()]),
    "bare": watch_reading(),
}


@BOTH
@pytest.mark.parametrize("shape", list(ENVELOPES))
def test_every_envelope_shape_gives_the_same_record(decode: Decoder, shape: str) -> None:
    expected = only_record(decode, ENVELOPES["single"])
    assert only_record(decode, ENVELOPES[shape]) == expected


@BOTH
def test_cache_flush_keeps_envelope_order(decode: Decoder) -> None:
    readings = cache_flush(50)
    decoded = decode(encode(envelope(readings)))
    assert decoded.errors == []
    assert [r.timestamp for r in decoded.records] == [
        datetime.fromisoformat(r["timestamp"]) for r in readings
    ]


@BOTH
def test_top_level_ids_apply_to_every_reading(decode: Decoder) -> None:
    message = envelope(cache_flush(3), customerId=1001, orgId="2001", user_id=3001)
    records = decode(encode(message)).records
    assert [(r.customer_id, r.org_id, r.user_id) for r in records] == [(1001, 2001, 3001)] * 3


@BOTH
def test_a_readings_own_id_wins_and_blank_means_none(decode: Decoder) -> None:
    readings = [
        watch_reading(customerId=7),
        watch_reading(customer_id="8", timestamp="2025-05-31 21:18:25"),
        watch_reading(customerId="", timestamp="2025-05-31 21:18:26"),
        watch_reading(customerId=None, timestamp="2025-05-31 21:18:27"),
    ]
    records = decode(encode(envelope(readings, customerId=1001))).records
    assert [r.customer_id for r in records] == [7, 8, 1001, 1001]


@BOTH
def test_relay_level_ids_win_over_the_outer_envelope(decode: Decoder) -> None:
    message = relay(watch_reading(), customerId=5, orgId=6)
    message["customerId"] = 1
    message["userId"] = 3
    record = only_record(decode, message)
    assert (record.customer_id, record.org_id, record.user_id) == (5, 6, 3)


@BOTH
def test_bare_reading_ids_are_its_own(decode: Decoder) -> None:
    record = only_record(decode, watch_reading(customerId=1001, org_id="2001", userId=3001.0))
    assert (record.customer_id, record.org_id, record.user_id) == (1001, 2001, 3001)


@BOTH
def test_exactly_max_readings_is_accepted(decode: Decoder) -> None:
    decoded = decode(encode(envelope(cache_flush(10))), max_readings=10)
    assert len(decoded.records) == 10


# --------------------------------------------------------------------------------------
# Names: every alias of the contract, and nothing else
# --------------------------------------------------------------------------------------

# The contract's names, primary first (the spec of the legacy format).
CONTRACT_NAMES: dict[str, list[str]] = {
    "deviceSn": ["id"],
    "heart_rate": ["heartRate", "xlv"],
    "blood_oxygen": ["bloodOxygen", "xy"],
    "body_temperature": ["temperature", "tw"],
    "blood_pressure_systolic": ["pressureHigh", "gxy"],
    "blood_pressure_diastolic": ["pressureLow", "dxy"],
    "step": ["bs"],
    "distance": ["jl"],
    "calorie": ["rl"],
    "stress": ["yl"],
    "latitude": ["wd"],
    "longitude": ["jd"],
    "altitude": ["hb"],
    "upload_method": ["uploadMethod"],
    "timestamp": ["cjsj"],
    "customerId": ["customer_id"],
    "orgId": ["org_id"],
    "userId": ["user_id"],
    "sleepData": ["smData"],
    "exerciseDailyData": ["ydData"],
    "exerciseWeekData": ["exerciseDailyWeekData", "ydWeekData"],
    "scientificSleepData": ["kxsmData"],
    "workoutData": [],
}

# primary name -> (value as sent, record attribute, expected value)
FIELD_CASES: dict[str, tuple[Any, str, Any]] = {
    "deviceSn": ("WATCH-0007", "device_sn", "WATCH-0007"),
    "heart_rate": (72, "heart_rate", 72),
    "blood_oxygen": (97, "blood_oxygen", 97),
    "body_temperature": ("36.6", "temperature", Decimal("36.60")),
    "blood_pressure_systolic": (118, "pressure_high", 118),
    "blood_pressure_diastolic": (76, "pressure_low", 76),
    "step": (4000, "step", 4000),
    "distance": ("2.8", "distance", Decimal("2.80")),
    "calorie": ("160.2", "calorie", Decimal("160.20")),
    "stress": (41, "stress", 41),
    "latitude": ("31.230416", "latitude", Decimal("31.230416")),
    "longitude": ("121.473701", "longitude", Decimal("121.473701")),
    "altitude": ("4.5", "altitude", Decimal("4.50")),
    "upload_method": ("bluetooth", "upload_method", "bluetooth"),
    "timestamp": ("2025-06-01 07:30:00", "timestamp", datetime(2025, 6, 1, 7, 30)),
    "customerId": ("1001", "customer_id", 1001),
    "orgId": (2001, "org_id", 2001),
    "userId": (3001, "user_id", 3001),
    "sleepData": (SLEEP_DATA, "sleep_data", SLEEP_DATA),
    "exerciseDailyData": (EXERCISE_DAILY_DATA, "exercise_daily_data", EXERCISE_DAILY_DATA),
    "exerciseWeekData": (EXERCISE_WEEK_DATA, "exercise_week_data", EXERCISE_WEEK_DATA),
    "scientificSleepData": (
        SCIENTIFIC_SLEEP_DATA,
        "scientific_sleep_data",
        SCIENTIFIC_SLEEP_DATA,
    ),
    "workoutData": (WORKOUT_DATA, "workout_data", WORKOUT_DATA),
}


def test_the_models_accept_exactly_the_contract_names() -> None:
    expected = {
        name: primary for primary, more in CONTRACT_NAMES.items() for name in [primary, *more]
    }
    assert expected == ALIASES
    assert set(FIELD_CASES) == set(CONTRACT_NAMES)


@BOTH
@pytest.mark.parametrize("name", sorted(ALIASES))
def test_every_name_of_a_field_is_read(decode: Decoder, name: str) -> None:
    primary = ALIASES[name]
    sent, attr, expected = FIELD_CASES[primary]
    reading: dict[str, Any] = {"deviceSn": SAMPLE_SN, "timestamp": "2025-05-31 21:18:24"}
    reading.pop(primary, None)
    reading[name] = sent
    assert getattr(only_record(decode, envelope(reading)), attr) == expected


@BOTH
@pytest.mark.parametrize("make", [legacy_reading, camel_reading], ids=["legacy", "camel"])
def test_old_firmware_and_sdk_names_give_the_watch_record(
    decode: Decoder, make: Callable[..., dict[str, Any]]
) -> None:
    record = only_record(decode, envelope(make()))
    watch = only_record(decode, envelope(watch_reading(sleepData=SLEEP_DATA)))
    differs = {
        f.name
        for f in dataclasses.fields(HealthRecord)
        if getattr(record, f.name) != getattr(watch, f.name)
    }
    # What the fixtures really send differently: ids, other slow fields, the uplink.
    assert differs <= {
        "customer_id",
        "org_id",
        "user_id",
        "exercise_daily_data",
        "exercise_week_data",
        "scientific_sleep_data",
        "upload_method",
    }


@BOTH
def test_when_two_names_are_sent_the_primary_wins(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading(heart_rate=70, heartRate=80, xlv=90)))
    assert record.heart_rate == 70
    record = only_record(decode, envelope(watch_reading(heart_rate=ABSENT, heartRate=80, xlv=90)))
    assert record.heart_rate == 80


@BOTH
def test_unknown_fields_are_ignored(decode: Decoder) -> None:
    record = only_record(
        decode, envelope(watch_reading(battery=87, firmware="2.3.1", extra={"a": [1]}))
    )
    assert record == only_record(decode, envelope(watch_reading()))


# --------------------------------------------------------------------------------------
# Types as sent
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("sent", [66, "66", " 66 ", 66.0])
def test_integer_fields_take_numbers_and_numeric_strings(decode: Decoder, sent: Any) -> None:
    assert only_record(decode, envelope(watch_reading(heart_rate=sent))).heart_rate == 66


@BOTH
@pytest.mark.parametrize("sent", ["36.5", 36.5, "36.50", " 36.5"])
def test_text_decimals_also_take_numbers(decode: Decoder, sent: Any) -> None:
    record = only_record(decode, envelope(watch_reading(body_temperature=sent)))
    assert str(record.temperature) == "36.50"


@BOTH
def test_decimals_round_half_up_to_the_column_scale(decode: Decoder) -> None:
    record = only_record(
        decode,
        envelope(watch_reading(distance="1.005", latitude="22.5430965", calorie="-0.0")),
    )
    assert str(record.distance) == "1.01"
    assert str(record.latitude) == "22.543097"
    assert str(record.calorie) == "0.00"


@BOTH
def test_blank_numbers_mean_not_sent(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading(heart_rate="", body_temperature=" ")))
    assert (record.heart_rate, record.temperature) == (None, None)


@BOTH
@pytest.mark.parametrize(
    ("sent", "expected"), [(10023, "10023"), ("  CRFTQ23409001890 ", SAMPLE_SN)]
)
def test_device_sn_numbers_become_text_and_whitespace_is_stripped(
    decode: Decoder, sent: Any, expected: str
) -> None:
    assert only_record(decode, envelope(watch_reading(deviceSn=sent))).device_sn == expected


@BOTH
@pytest.mark.parametrize(
    ("sent", "expected"),
    [(1001, 1001), ("1001", 1001), (" 1001 ", 1001), (1001.0, 1001), ("", None), (None, None)],
)
def test_ids_are_normalized_to_int(decode: Decoder, sent: Any, expected: int | None) -> None:
    assert only_record(decode, envelope(watch_reading(userId=sent))).user_id == expected


@BOTH
@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("wifi", "wifi"),
        ("bluetooth", "bluetooth"),
        ("common_event", "common_event"),
        ("4g", "4g"),  # as sent: the sink maps it to the ENUM's esim
        ("4G", "4g"),
        ("esim", "esim"),
        ("WiFi", "wifi"),
        ("LoRaWAN", "lorawan"),
        ("X" * 40, "x" * 32),
        ("", None),
    ],
)
def test_upload_method(decode: Decoder, sent: str, expected: str | None) -> None:
    record = only_record(decode, envelope(watch_reading(upload_method=sent)))
    assert record.upload_method == expected


@BOTH
def test_timestamp_is_device_local_time_as_sent(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading(timestamp="2025-12-31 23:59:59")))
    assert record.timestamp == datetime(2025, 12, 31, 23, 59, 59)
    assert record.timestamp.tzinfo is None


# --------------------------------------------------------------------------------------
# Slow fields and sleep hours
# --------------------------------------------------------------------------------------


@BOTH
def test_sleep_hours_from_the_real_sleep_data(decode: Decoder) -> None:
    record = only_record(decode, envelope(watch_reading(sleepData=SLEEP_DATA)))
    assert record.sleep == Decimal(SLEEP_HOURS)
    assert str(record.sleep) == "3.87"
    assert record.sleep_data == SLEEP_DATA


@BOTH
def test_sleep_hours_add_up_every_interval(decode: Decoder) -> None:
    sleep = {
        "code": 0,
        "data": [
            {"startTimeStamp": 1757800000000, "endTimeStamp": 1757803600000, "type": 1},
            {"startTimeStamp": 1757803600000, "endTimeStamp": 1757805400000, "type": 2},
            {"startTimeStamp": "bad"},  # skipped, not fatal
        ],
    }
    record = only_record(decode, envelope(watch_reading(sleepData=orjson.dumps(sleep).decode())))
    assert record.sleep == Decimal("1.50")


@BOTH
@pytest.mark.parametrize("sent", ["null", None, ABSENT, ""])
def test_null_slow_fields_are_none(decode: Decoder, sent: Any) -> None:
    overrides = {name: sent for name in ("sleepData", "exerciseDailyData", "workoutData")}
    record = only_record(decode, envelope(watch_reading(**overrides)))
    assert (record.sleep_data, record.sleep, record.exercise_daily_data) == (None, None, None)
    assert record.workout_data is None


@BOTH
def test_slow_fields_are_stored_as_compact_json(decode: Decoder) -> None:
    spaced = '{ "code": 0, "data": [ {"step": 1} ] }'
    decoded_object = {"code": 0, "data": [{"calorie": 3}]}
    record = only_record(
        decode, envelope(watch_reading(exerciseDailyData=spaced, workoutData=decoded_object))
    )
    assert record.exercise_daily_data == '{"code":0,"data":[{"step":1}]}'
    assert record.workout_data == '{"code":0,"data":[{"calorie":3}]}'


@BOTH
def test_sleep_data_without_intervals_gives_zero_or_no_hours(decode: Decoder) -> None:
    empty = only_record(decode, envelope(watch_reading(sleepData='{"code":0,"data":[]}')))
    assert str(empty.sleep) == "0.00"
    other = only_record(decode, envelope(watch_reading(sleepData='{"code":1}')))
    assert other.sleep is None
    assert other.sleep_data == '{"code":1}'


# --------------------------------------------------------------------------------------
# Invalid readings: reason codes and details that name the field
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"deviceSn": ABSENT}, "deviceSn: missing"),
        ({"deviceSn": None}, "deviceSn: is null"),
        ({"deviceSn": "   "}, "deviceSn: is empty"),
    ],
)
def test_missing_device_sn(decode: Decoder, overrides: dict[str, Any], detail: str) -> None:
    error = only_error(decode, envelope(watch_reading(**overrides)))
    assert (error.index, error.reason, error.detail) == (0, "missing_device_sn", detail)


@BOTH
@pytest.mark.parametrize(
    ("sent", "detail"),
    [
        ("CRFTQ 2340", "deviceSn: must be printable ASCII without whitespace or quotes"),
        ("CRF'TQ", "deviceSn: must be printable ASCII without whitespace or quotes"),
        ("Ü" * 3, "deviceSn: must be printable ASCII without whitespace or quotes"),
        ("A" * 65, "deviceSn: 65 characters, at most 64 allowed"),
        (["x"], "deviceSn: must be a string (got array"),
    ],
)
def test_malformed_device_sn(decode: Decoder, sent: Any, detail: str) -> None:
    error = only_error(decode, envelope(watch_reading(deviceSn=sent)))
    assert error.reason == "schema_violation"
    assert error.detail.startswith(detail)


@BOTH
@pytest.mark.parametrize(
    ("sent", "detail"),
    [
        ("2025-13-01 00:00:00", "timestamp: '2025-13-01 00:00:00' is not yyyy-MM-dd HH:mm:ss"),
        ("2025-02-30 08:00:00", "timestamp: '2025-02-30 08:00:00' is not yyyy-MM-dd HH:mm:ss"),
        ("2025-05-31T21:18:24", "timestamp: '2025-05-31T21:18:24' is not yyyy-MM-dd HH:mm:ss"),
        ("2025/05/31 21:18:24", "timestamp: '2025/05/31 21:18:24' is not yyyy-MM-dd HH:mm:ss"),
        ("2025-05-31", "timestamp: '2025-05-31' is not yyyy-MM-dd HH:mm:ss"),
        (
            "1999-12-31 23:59:59",
            "timestamp: '1999-12-31 23:59:59' is outside 2000-01-01 00:00:00 .. "
            "2100-12-31 23:59:59",
        ),
        (
            "2101-01-01 00:00:00",
            "timestamp: '2101-01-01 00:00:00' is outside 2000-01-01 00:00:00 .. "
            "2100-12-31 23:59:59",
        ),
        (1748726304000, "timestamp: 1748726304000 is not a yyyy-MM-dd HH:mm:ss string"),
        (None, "timestamp: None is not a yyyy-MM-dd HH:mm:ss string"),
        (ABSENT, "timestamp: missing"),
    ],
)
def test_invalid_timestamp(decode: Decoder, sent: Any, detail: str) -> None:
    error = only_error(decode, envelope(watch_reading(timestamp=sent)))
    assert (error.reason, error.detail) == ("invalid_timestamp", detail)


@BOTH
def test_timestamp_bounds_are_inclusive(decode: Decoder) -> None:
    for sent in ("2000-01-01 00:00:00", "2100-12-31 23:59:59"):
        only_record(decode, envelope(watch_reading(timestamp=sent)))


@BOTH
def test_alias_errors_name_the_field_as_sent(decode: Decoder) -> None:
    error = only_error(decode, envelope(legacy_reading(cjsj="yesterday")))
    assert error.detail == "cjsj (alias of timestamp): 'yesterday' is not yyyy-MM-dd HH:mm:ss"


@BOTH
@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"heart_rate": 301}, "heart_rate: Input should be less than or equal to 300 (got 301)"),
        ({"heart_rate": -1}, "heart_rate: Input should be greater than or equal to 0 (got -1)"),
        (
            {"heart_rate": "abc"},
            "heart_rate: Input should be a valid integer, unable to parse string as an "
            "integer (got 'abc')",
        ),
        (
            {"heart_rate": 66.5},
            "heart_rate: Input should be a valid integer, got a number with a fractional "
            "part (got 66.5)",
        ),
        ({"heart_rate": True}, "heart_rate: Input should be a valid integer (got True)"),
        ({"blood_oxygen": 101}, "blood_oxygen: Input should be less than or equal to 100"),
        ({"body_temperature": "50.1"}, "body_temperature: Input should be less than or equal"),
        ({"body_temperature": "-0.1"}, "body_temperature: Input should be greater than or"),
        ({"body_temperature": "NaN"}, "body_temperature: Input should be a finite number"),
        ({"blood_pressure_systolic": 301}, "blood_pressure_systolic: Input should be less"),
        ({"blood_pressure_diastolic": -5}, "blood_pressure_diastolic: Input should be greater"),
        ({"step": -1}, "step: Input should be greater than or equal to 0"),
        ({"stress": -1}, "stress: Input should be greater than or equal to 0"),
        ({"distance": "-2.0"}, "distance: Input should be greater than or equal to 0"),
        ({"calorie": "lots"}, "calorie: Input should be a valid decimal"),
        ({"latitude": "90.5"}, "latitude: Input should be less than or equal to 90"),
        ({"longitude": "-180.1"}, "longitude: Input should be greater than or equal to -180"),
        ({"customerId": "ACME"}, "customerId: 'ACME' is not a numeric id"),
        ({"userId": 12.5}, "userId: 12.5 is not a whole number"),
        ({"upload_method": 4}, "upload_method: must be a string (got number 4)"),
        ({"workoutData": 42}, "workoutData: must be a JSON-encoded string, object or array"),
        ({"xlv": 400, "heart_rate": ABSENT}, "xlv (alias of heart_rate): Input should be less"),
    ],
)
def test_out_of_range_and_malformed_values(
    decode: Decoder, overrides: dict[str, Any], detail: str
) -> None:
    error = only_error(decode, envelope(watch_reading(**overrides)))
    assert error.reason == "schema_violation"
    assert error.detail.startswith(detail), error.detail


@BOTH
def test_every_problem_of_a_reading_is_listed_and_sn_decides_the_reason(
    decode: Decoder,
) -> None:
    reading = watch_reading(deviceSn=ABSENT, timestamp="soon", heart_rate=999)
    error = only_error(decode, envelope(reading))
    assert error.reason == "missing_device_sn"
    assert error.detail.split("; ") == [
        "deviceSn: missing",
        "heart_rate: Input should be less than or equal to 300 (got 999)",
        "timestamp: 'soon' is not yyyy-MM-dd HH:mm:ss",
    ]


@BOTH
def test_one_bad_reading_does_not_block_the_flush(decode: Decoder) -> None:
    readings = cache_flush(5)
    readings[1]["timestamp"] = "2025-05-31 25:00:00"
    readings[3]["heart_rate"] = 512
    readings[4] = "garbage"  # type: ignore[call-overload]
    decoded = decode(encode(envelope(readings)))
    assert [r.timestamp.second for r in decoded.records] == [0, 2]
    assert [(e.index, e.reason) for e in decoded.errors] == [
        (1, "invalid_timestamp"),
        (3, "schema_violation"),
        (4, "schema_violation"),
    ]
    assert decoded.errors[2].detail == "reading is a JSON string, not an object"


@BOTH
def test_reading_error_detail_is_bounded(decode: Decoder) -> None:
    error = only_error(decode, envelope(watch_reading(heart_rate="9" * 10_000)))
    assert len(error.detail) <= 500
    dropped = decode(encode(envelope(watch_reading(sleepData="{" * 10_000)))).dropped
    assert len(dropped) == 1 and len(dropped[0].detail) <= 500


# --------------------------------------------------------------------------------------
# Unusable messages
# --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"", "invalid_json", "not valid JSON"),
        (b"{'data': 1}", "invalid_json", "not valid JSON"),
        (b'{"data": [', "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "invalid_json", "not valid JSON"),
        (b"[1, 2]", "invalid_envelope", "message is a JSON array, not an object"),
        (b'"hello"', "invalid_envelope", "message is a JSON string, not an object"),
        (b"42", "invalid_envelope", "message is a JSON number, not an object"),
        (b"null", "invalid_envelope", "message is a JSON null, not an object"),
        (b"{}", "invalid_envelope", "message has neither 'data' nor a top-level"),
        (b'{"data": null}', "invalid_envelope", "data must be an object or an array (got null)"),
        (b'{"data": "x"}', "invalid_envelope", "data must be an object or an array (got string)"),
        (b'{"data": {"data": 5}}', "invalid_envelope", "data.data must be an object or an array"),
        (b'{"data": {"data": {"data": {}}}}', "invalid_envelope", "data.data.data: envelopes"),
        (b'{"data": [], "customerId": 1}', "empty_envelope", "data is an empty array"),
        (b'{"data": {"data": []}}', "empty_envelope", "data.data is an empty array"),
        (b'{"data": {}, "orgId": "acme"}', "invalid_envelope", "orgId: 'acme' is not a numeric"),
    ],
)
def test_unusable_messages(decode: Decoder, value: bytes, reason: str, detail: str) -> None:
    error = message_error(decode, value)
    assert error.reason == reason
    assert error.detail.startswith(detail), error.detail
    assert len(error.detail) <= 500


@BOTH
def test_too_many_readings(decode: Decoder) -> None:
    error = message_error(decode, encode(envelope(cache_flush(11))), max_readings=10)
    assert (error.reason, error.detail) == (
        "too_many_readings",
        "data has 11 readings, at most 10 allowed",
    )
    assert message_error(decode, encode(envelope(cache_flush(1001)))).reason == (
        "too_many_readings"
    )


@BOTH
def test_empty_reading_object_is_a_reading_error_not_a_message_error(decode: Decoder) -> None:
    error = only_error(decode, envelope({}))
    assert error.reason == "missing_device_sn"


# --------------------------------------------------------------------------------------
# Redis hash fields
# --------------------------------------------------------------------------------------


def test_redis_fields_use_the_legacy_names_and_formats() -> None:
    record = decode_message(encode(envelope(watch_reading(), customerId=1001))).records[0]
    assert legacy_hash(record) == {
        "deviceSn": SAMPLE_SN,
        "heartRate": "66",
        "bloodOxygen": "98",
        "temperature": "36.5",
        "pressureHigh": "107",
        "pressureLow": "74",
        "stress": "35",
        "step": "3512",
        "distance": "2.4",
        "calorie": "140.5",
        "latitude": "22.543096",
        "longitude": "114.057865",
        "altitude": "12",
        "timestamp": "2025-05-31 21:18:24",
        "uploadMethod": "wifi",
        "customerId": "1001",
        "customer_id": "1001",
        "orgId": "",
        "userId": "",
        "sleepData": "",
        "exerciseDailyData": "",
        "exerciseDailyWeekData": "",
        "scientificSleepData": "",
        "workoutData": "",
    }


def test_redis_fields_of_the_real_upload() -> None:
    fields = legacy_hash(decode_message(SAMPLE_UPLOAD).records[0])
    assert fields["temperature"] == "0.0"
    assert (fields["latitude"], fields["longitude"], fields["altitude"]) == ("0", "0", "0")
    assert fields["customerId"] == "" and fields["userId"] == ""


# --------------------------------------------------------------------------------------
# Fast path: used for what watches send, and in agreement with the models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        SAMPLE_UPLOAD,
        encode(envelope(cache_flush(20), customerId=1001)),
        encode(envelope(legacy_reading())),
        encode(relay(camel_reading())),
        encode(watch_reading(**{"sleepData": SLEEP_DATA, "userId": "3001"})),
    ],
    ids=["sample", "flush", "legacy", "relay-camel", "bare-slow"],
)
def test_typical_messages_never_reach_the_model(
    monkeypatch: pytest.MonkeyPatch, message: bytes
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the fast path deferred a typical reading to the model")

    monkeypatch.setattr(schemas.decode, "_model_record", refuse)
    assert decode_message(message).records


def outcome(decode: Decoder, value: bytes) -> tuple[str, ...]:
    """A comparable summary of a decode: repr() pins Decimal scales and types."""
    try:
        with default_recursion_limit():
            decoded = decode(value, max_readings=5)
    except MessageError as exc:
        assert exc.reason != "undecodable", exc.detail  # the guard is for unknown bugs
        return ("error", exc.reason, exc.detail)
    return ("ok", repr(decoded.records), repr(decoded.errors), repr(decoded.dropped))


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    st.sampled_from(["", " ", "null", "NaN", "-0", "1e3", "3_6", "+5", ".5", "5.", "١٢", "0x1F"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "data"]), st.integers(), max_size=2),
    SMALL_HOSTILE,  # deep nesting, huge numbers, invalid UTF-8, format characters
)
# Each strategy mixes plausible values, the edges of every range and junk, so that a
# fast path that drifts from the models by one unit at a bound gets caught.
INTS = st.one_of(
    st.sampled_from([0, 1, 66, 100, 101, 299, 300, 301, -1, 2**31 - 1, 2**31, 2**63, -(2**63) - 1]),
    st.integers(-5, 320),
    st.integers(-5, 320).map(str),
    st.sampled_from(["66", " 66 ", "66.0", "6_6", "", " ", "300", "301"]),
    st.sampled_from([66.0, 66.5, 300.0, 301.0, -0.0, 1e20]),
    JUNK,
)
DECIMALS = st.one_of(
    st.floats(-200, 200, allow_nan=False).map(lambda f: f"{f:.1f}"),
    st.floats(-200, 200, allow_nan=False).map(lambda f: f"{f:.7f}"),
    st.sampled_from(
        [
            "0",
            "0.0",
            "-0",
            "-0.0",
            "36.5",
            "36.55",
            "36.555",
            "50",
            "50.00",
            "50.001",
            "-0.001",
            "-0.005",
            "-0.0049",
            "90",
            "90.0000004",
            "90.0000005",
            "-90.000001",
            "180",
            "180.0000004",
            "-180.0000005",
            "1000000000",
            "1000000000.004",
            "1000000000.01",
            "10000000",
            "-10000000",
            "-10000000.001",
            "1e1",
            "1E-7",
            "0000036.5",
            "36.",
            "-.5",
            "36.5000000000000",
        ]
    ),
    st.sampled_from([0, 50, 51, 90, -91, 180, 181, 36.5, 50.0001, -0.0, 1e-7]),
    st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False).map(str),
    JUNK,
)
TIMESTAMPS = st.one_of(
    st.datetimes(datetime(1990, 1, 1), datetime(2110, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
    ),
    st.text("0123456789-: T+.Z", min_size=17, max_size=21),
    st.sampled_from(
        [
            "1999-12-31 23:59:59",
            "2000-01-01 00:00:00",
            "2100-12-31 23:59:59",
            "2101-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "0000-01-01 00:00:00",
            "2025-05-31T21:18:24",
            "2025-02-29 12:00:00",
            "2024-02-29 12:00:00",
            "2025-05-31 24:00:00",
            "2025-05-31 21:60:00",
            "2025-05-31 21:18:24\n",
            " 2025-05-31 21:18:24",
            "2025-05-31 21:18:2٤",
            "٢٠٢٥-05-31 21:18:24",
            "2025-W22-6 21:18:24",
            "2025-05-31 21:18+08",
            "2025-05-31 2118:24Z",
            "2025-05-31 21:18:24.5",
            "+025-05-31 21:18:24",
            "2025-5-31 21:18:24 ",
        ]
    ),
    JUNK,
)
DEVICE_SNS = st.one_of(
    st.just(SAMPLE_SN),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7F), min_size=0, max_size=66),
    st.integers(-(2**64), 2**64),
    st.sampled_from([" SN1 ", "A" * 64, "A" * 65, " " + "A" * 64, 'a"b', "a'b", "é", "\tSN"]),
    JUNK,
)
IDS = st.one_of(
    st.integers(0, 10**6),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]),
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(["", " ", "007", "+7", "-7", "7.0", "1e3", " 12 "]),
    st.sampled_from([7.0, 7.5, 9.3e18, 9.3e19, -0.0]),
    JUNK,
)
METHODS = st.one_of(
    st.sampled_from(["wifi", "4g", "4G", "ESIM", "bluetooth", "common_event", " x ", "Z" * 33]),
    JUNK,
)
SLOW = st.one_of(
    st.sampled_from(
        [SLEEP_DATA, WORKOUT_DATA, "null", " null ", "{oops", '{"data": [1]}', "[]", "7", '""']
    ),
    st.builds(
        lambda pairs: orjson.dumps(
            {"data": [{"startTimeStamp": s, "endTimeStamp": e} for s, e in pairs]}
        ).decode(),
        st.lists(st.tuples(st.integers(0, 2**45), st.integers(0, 2**45)), max_size=3),
    ),
    st.builds(lambda hours: {"data": [{"startTimeStamp": 0, "endTimeStamp": hours}]},
              st.sampled_from([35_999_964_000, 35_999_982_000, 35_999_982_001])),
    JUNK,
)  # fmt: skip


@st.composite
def near(draw: st.DrawFn, edges: list[Any], general: st.SearchStrategy[Any]) -> Any:
    """Half of the time one of `edges` (one_of would weight them by branch count only)."""
    return draw(st.sampled_from(edges)) if draw(st.booleans()) else draw(general)


def ints_near(high: int) -> st.SearchStrategy[Any]:
    """INTS, half of the time right at the field's bounds."""
    edges = [-1, 0, high, high + 1, str(high), str(high + 1), float(high), float(high + 1)]
    return near(edges, INTS)


def decimals_near(low: Decimal, high: Decimal) -> st.SearchStrategy[Any]:
    """DECIMALS, half of the time right at (or a rounding step beyond) the field's bounds."""
    steps = [Decimal(0), Decimal("0.01"), Decimal("0.000001"), Decimal("0.0000001")]
    edges: list[Any] = [
        str(bound + sign * step) for bound in (low, high) for step in steps for sign in (1, -1)
    ]
    return near([*edges, int(low), int(high), float(high)], DECIMALS)


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "deviceSn": DEVICE_SNS,
    "timestamp": TIMESTAMPS,
    "heart_rate": ints_near(HEART_RATE_MAX),
    "blood_oxygen": ints_near(BLOOD_OXYGEN_MAX),
    "blood_pressure_systolic": ints_near(PRESSURE_MAX),
    "blood_pressure_diastolic": ints_near(PRESSURE_MAX),
    "step": ints_near(INT32_MAX),
    "stress": ints_near(INT32_MAX),
    "body_temperature": decimals_near(TEMPERATURE_MIN, TEMPERATURE_MAX),
    "distance": decimals_near(AMOUNT_MIN, AMOUNT_MAX),
    "calorie": decimals_near(AMOUNT_MIN, AMOUNT_MAX),
    "latitude": decimals_near(-LATITUDE_MAX, LATITUDE_MAX),
    "longitude": decimals_near(-LONGITUDE_MAX, LONGITUDE_MAX),
    "altitude": decimals_near(-ALTITUDE_MAX, ALTITUDE_MAX),
    "upload_method": METHODS,
    "customerId": IDS,
    "orgId": IDS,
    "userId": IDS,
    "sleepData": SLOW,
    "exerciseDailyData": SLOW,
    "exerciseWeekData": SLOW,
    "scientificSleepData": SLOW,
    "workoutData": SLOW,
}


@st.composite
def readings(draw: st.DrawFn) -> Any:
    """Mostly the sample reading with a few fields replaced, renamed or duplicated;
    sometimes not a reading at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(JUNK)
    reading = watch_reading()
    for primary in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4)):
        names = [primary, *CONTRACT_NAMES[primary]]
        reading.pop(primary, None)
        for name in draw(st.lists(st.sampled_from(names), min_size=0, max_size=2, unique=True)):
            reading[name] = draw(VALUES[primary])
    if draw(st.booleans()):
        reading["battery"] = draw(JUNK)
    return reading


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(readings(), min_size=0, max_size=6))
    first = items[0] if items else draw(readings())
    top: dict[str, Any] = {}
    if draw(st.booleans()):
        top = draw(st.dictionaries(st.sampled_from(["customerId", "org_id", "userId"]), IDS))
    shape = draw(
        st.sampled_from(
            ["single", "single", "array", "array", "relay", "relay_array", "bare", "junk"]
        )
    )
    message: Any = {
        "single": envelope(first, **top),
        "array": envelope(items, **top),
        "relay": relay(first, **top),
        "relay_array": relay(items),
        "bare": first,
        "junk": draw(JUNK),
    }[shape]
    return encode_hostile(message)  # unlike orjson, writes integers beyond 64 bits


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_fast_path_agrees_with_the_models(value: bytes) -> None:
    assert outcome(decode_message, value) == outcome(decode_message_reference, value)


@pytest.mark.parametrize("primary", sorted(VALUES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_path_agrees_field_by_field(primary: str, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([primary, *CONTRACT_NAMES[primary]]), label="name")
    reading = watch_reading(**{primary: ABSENT})
    reading[name] = data.draw(VALUES[primary], label="value")
    value = encode_hostile(envelope(reading))
    assert outcome(decode_message, value) == outcome(decode_message_reference, value)


@settings(max_examples=300, deadline=None)
@given(TIMESTAMPS)
def test_fast_timestamp_check_agrees_with_the_pattern(sent: Any) -> None:
    value = encode_hostile(envelope(watch_reading(timestamp=sent)))
    assert outcome(decode_message, value) == outcome(decode_message_reference, value)


# --------------------------------------------------------------------------------------
# Round trip: what a well-behaved watch sends comes back as sent
# --------------------------------------------------------------------------------------


@st.composite
def valid_readings(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(wire reading under random names and representations, expected record fields)."""
    tenth = st.integers(0, 500).map(lambda t: Decimal(t) / 10)
    values: dict[str, Any] = {
        "device_sn": draw(st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_", min_size=1, max_size=64)),
        "timestamp": draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 12, 31, 23, 59, 59))),
        "heart_rate": draw(st.integers(0, 300)),
        "blood_oxygen": draw(st.integers(0, 100)),
        "pressure_high": draw(st.integers(0, 300)),
        "pressure_low": draw(st.integers(0, 300)),
        "step": draw(st.integers(0, 100_000)),
        "stress": draw(st.integers(0, 100)),
        "temperature": draw(tenth),
        "distance": draw(tenth),
        "calorie": draw(tenth),
        "latitude": draw(st.integers(-90_000_000, 90_000_000).map(lambda v: Decimal(v) / 10**6)),
        "longitude": draw(st.integers(-180_000_000, 180_000_000).map(lambda v: Decimal(v) / 10**6)),
        "customer_id": draw(st.integers(1, 2**63 - 1)),
    }
    values["timestamp"] = values["timestamp"].replace(microsecond=0)

    def name(primary: str) -> str:
        return draw(st.sampled_from([primary, *CONTRACT_NAMES[primary]]))

    def number(value: int) -> Any:
        exact_float = [float(value)] if value < 2**53 else []
        return draw(st.sampled_from([value, str(value), *exact_float]))

    wire = {
        name("deviceSn"): values["device_sn"],
        name("timestamp"): values["timestamp"].strftime("%Y-%m-%d %H:%M:%S"),
        name("heart_rate"): number(values["heart_rate"]),
        name("blood_oxygen"): number(values["blood_oxygen"]),
        name("blood_pressure_systolic"): number(values["pressure_high"]),
        name("blood_pressure_diastolic"): number(values["pressure_low"]),
        name("step"): number(values["step"]),
        name("stress"): number(values["stress"]),
        name("body_temperature"): f"{values['temperature']:.1f}",
        name("distance"): f"{values['distance']:.1f}",
        name("calorie"): f"{values['calorie']:.1f}",
        name("latitude"): str(values["latitude"]),
        name("longitude"): str(values["longitude"]),
        name("customerId"): number(values["customer_id"]),
    }
    return wire, values


@settings(max_examples=300, deadline=None)
@given(valid_readings())
def test_round_trip_of_valid_readings(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    wire, values = case
    for decode in (decode_message, decode_message_reference):
        record = only_record(decode, envelope(wire))
        for field, expected in values.items():
            assert getattr(record, field) == expected, field
        redis = legacy_hash(record)
        for field, attr in (("temperature", "body_temperature"), ("distance", "distance"),
                            ("calorie", "calorie")):  # fmt: skip
            assert redis[field] == wire[next(n for n in wire if ALIASES[n] == attr)]
        assert redis["timestamp"] == wire[next(n for n in wire if ALIASES[n] == "timestamp")]
