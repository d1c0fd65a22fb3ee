"""The legacy `health_data:{sn}` hash, field for field (pure).

The legacy bigscreen and its API read this hash and hand it to clients unchanged, so the
field names and their string formatting are part of the contract: camelCase names, every
value a string, `''` for a missing value (which overwrites the previous one, as the legacy
HSET did), ids both as `customerId` and `customer_id`, slow fields as their JSON text.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from consumer.sinks.mysql_rows import legacy_upload_method
from schemas.record import HealthRecord

_TENTH = Decimal("0.1")


def _one_decimal(value: Decimal) -> str:
    # The watches send these as Java's "%.1f", which rounds half up.
    return str(value.quantize(_TENTH, rounding=ROUND_HALF_UP))


def _plain(value: Decimal) -> str:
    # "0" and "22.54321" as a device would send them, not "0.000000" or "2.2E+1".
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _timestamp(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M:%S"))


# Legacy hash field -> (record attribute, formatter of a present value).
FIELDS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("uploadMethod", "upload_method", str),
    ("heartRate", "heart_rate", str),
    ("pressureHigh", "pressure_high", str),
    ("pressureLow", "pressure_low", str),
    ("bloodOxygen", "blood_oxygen", str),
    ("temperature", "temperature", _one_decimal),
    ("stress", "stress", str),
    ("step", "step", str),
    ("timestamp", "timestamp", _timestamp),
    ("deviceSn", "device_sn", str),
    ("distance", "distance", _one_decimal),
    ("calorie", "calorie", _one_decimal),
    ("latitude", "latitude", _plain),
    ("longitude", "longitude", _plain),
    ("altitude", "altitude", _plain),
    ("customerId", "customer_id", str),
    ("customer_id", "customer_id", str),
    ("orgId", "org_id", str),
    ("userId", "user_id", str),
    ("sleepData", "sleep_data", str),
    ("exerciseDailyData", "exercise_daily_data", str),
    ("exerciseDailyWeekData", "exercise_week_data", str),
    ("scientificSleepData", "scientific_sleep_data", str),
    ("workoutData", "workout_data", str),
)
FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in FIELDS)


def legacy_hash(record: HealthRecord) -> dict[str, str]:
    """Every legacy field, as the legacy upload path wrote it."""
    out: dict[str, str] = {}
    for name, attr, fmt in FIELDS:
        value = getattr(record, attr)
        out[name] = "" if value is None else fmt(value)
    out["uploadMethod"] = legacy_upload_method(record.upload_method)
    return out


# Memoized formatting: a fleet sends a few thousand distinct values per field, and a
# Decimal quantize or format costs more than the dict look-up. Bounded like any cache.
_FORMAT_CACHE_LIMIT = 100_000


def _memoized(fmt: Callable[[Decimal], str]) -> Callable[[Decimal | None], str]:
    """`fmt` of a present value, '' for None, remembered per value (bounded)."""
    memo: dict[Decimal, str] = {}

    def cached(value: Decimal | None) -> str:
        if value is None:
            return ""
        text = memo.get(value)
        if text is None:
            text = fmt(value)
            if len(memo) < _FORMAT_CACHE_LIMIT:
                memo[value] = text
        return text

    return cached


_one_decimal_cached = _memoized(_one_decimal)
_plain_cached = _memoized(_plain)


def _s(value: object) -> str:
    return "" if value is None else str(value)


def latest_state_args(r: HealthRecord) -> tuple[str, bytes]:
    """What the latest-state script takes per device: the reading's timestamp and the JSON
    array [deviceSn, name, value, ...] of `legacy_hash`, in FIELDS order.

    Built as one list rather than through `legacy_hash`'s dict of 24 formatter calls: this
    runs for every device of every batch (the unit tests hold the two to agreement).
    """
    ts = r.timestamp.strftime("%Y-%m-%d %H:%M:%S")
    customer = _s(r.customer_id)
    flat = [
        r.device_sn,
        "uploadMethod",
        legacy_upload_method(r.upload_method),
        "heartRate",
        _s(r.heart_rate),
        "pressureHigh",
        _s(r.pressure_high),
        "pressureLow",
        _s(r.pressure_low),
        "bloodOxygen",
        _s(r.blood_oxygen),
        "temperature",
        _one_decimal_cached(r.temperature),
        "stress",
        _s(r.stress),
        "step",
        _s(r.step),
        "timestamp",
        ts,
        "deviceSn",
        r.device_sn,
        "distance",
        _one_decimal_cached(r.distance),
        "calorie",
        _one_decimal_cached(r.calorie),
        "latitude",
        _plain_cached(r.latitude),
        "longitude",
        _plain_cached(r.longitude),
        "altitude",
        _plain_cached(r.altitude),
        "customerId",
        customer,
        "customer_id",
        customer,
        "orgId",
        _s(r.org_id),
        "userId",
        _s(r.user_id),
        "sleepData",
        _s(r.sleep_data),
        "exerciseDailyData",
        _s(r.exercise_daily_data),
        "exerciseDailyWeekData",
        _s(r.exercise_week_data),
        "scientificSleepData",
        _s(r.scientific_sleep_data),
        "workoutData",
        _s(r.workout_data),
    ]
    return ts, orjson.dumps(flat)
