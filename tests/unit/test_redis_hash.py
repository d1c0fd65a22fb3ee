"""The Redis hash is the legacy one: names, string formatting, '' for missing values."""

import datetime as dt
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from consumer.sinks.redis_hash import FIELD_NAMES, latest_state_args, legacy_hash
from tests.records import make_record

LEGACY_FIELDS = {
    "uploadMethod", "heartRate", "pressureHigh", "pressureLow", "bloodOxygen", "temperature",
    "stress", "step", "timestamp", "deviceSn", "distance", "calorie", "latitude", "longitude",
    "altitude", "customerId", "customer_id", "orgId", "userId", "sleepData",
    "exerciseDailyData", "exerciseDailyWeekData", "scientificSleepData", "workoutData",
}  # fmt: skip


def test_every_legacy_field_and_nothing_else() -> None:
    assert set(FIELD_NAMES) == LEGACY_FIELDS
    assert set(legacy_hash(make_record())) == LEGACY_FIELDS


def test_values_are_formatted_like_the_legacy_upload_path() -> None:
    record = make_record(
        "SN1",
        timestamp=dt.datetime(2025, 6, 1, 8, 5, 9),
        temperature=Decimal("36.55"),
        latitude=Decimal("22.540000"),
        altitude=Decimal("0.00"),
        upload_method="4g",
        sleep_data='{"code":0}',
        customer_id=7,
        org_id=None,
    )
    h = legacy_hash(record)
    assert h["timestamp"] == "2025-06-01 08:05:09"
    assert h["temperature"] == "36.6" and h["latitude"] == "22.54" and h["altitude"] == "0"
    assert h["heartRate"] == "66" and h["deviceSn"] == "SN1"
    assert h["customerId"] == h["customer_id"] == "7" and h["orgId"] == ""
    assert h["sleepData"] == '{"code":0}' and h["workoutData"] == ""
    assert h["uploadMethod"] == "esim"


def test_missing_upload_method_is_wifi_and_unknown_is_common_event() -> None:
    assert legacy_hash(make_record(upload_method=None))["uploadMethod"] == "wifi"
    assert legacy_hash(make_record(upload_method="lora%s"))["uploadMethod"] == "common_event"
    assert legacy_hash(make_record(upload_method="bluetooth"))["uploadMethod"] == "bluetooth"


def _decimals(places: int, digits: int) -> st.SearchStrategy[Decimal | None]:
    exp = Decimal(1).scaleb(-places)
    return st.none() | st.decimals(
        min_value=-(10**digits), max_value=10**digits, places=places, allow_nan=False
    ).map(lambda d: d.quantize(exp))


@given(
    temperature=_decimals(2, 2),
    distance=_decimals(2, 6),
    latitude=_decimals(6, 2),
    altitude=_decimals(2, 4),
    ids=st.tuples(*[st.none() | st.integers(0, 10**12)] * 3),
    heart_rate=st.none() | st.integers(0, 300),
    method=st.sampled_from([None, "", "wifi", "4g", "LoRa", "bluetooth"]),
    slow=st.none() | st.text(max_size=20),
)
def test_latest_state_args_are_the_legacy_hash_in_order(
    temperature: Decimal | None,
    distance: Decimal | None,
    latitude: Decimal | None,
    altitude: Decimal | None,
    ids: tuple[int | None, int | None, int | None],
    heart_rate: int | None,
    method: str | None,
    slow: str | None,
) -> None:
    record = make_record(
        "SN-\u00e9\"x",
        temperature=temperature, distance=distance, calorie=distance, latitude=latitude,
        longitude=latitude, altitude=altitude, customer_id=ids[0], org_id=ids[1],
        user_id=ids[2], heart_rate=heart_rate, upload_method=method, sleep_data=slow,
        workout_data=slow,
    )  # fmt: skip
    expected = legacy_hash(record)
    for _ in range(2):  # a second time from the format caches
        timestamp, flat = latest_state_args(record)
        assert timestamp == expected["timestamp"]
        pairs = orjson.loads(flat)
        assert pairs[0] == record.device_sn
        assert list(zip(pairs[1::2], pairs[2::2], strict=True)) == list(expected.items())
