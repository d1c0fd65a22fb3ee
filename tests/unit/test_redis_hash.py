"""The Redis hash is the legacy one: names, string formatting, '' for missing values."""

import datetime as dt
from decimal import Decimal

from consumer.sinks.redis_hash import FIELD_NAMES, legacy_hash
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
