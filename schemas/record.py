"""The normalized reading every consumer stage works with.

A plain frozen slots dataclass rather than a pydantic model: the consumer builds ~50k of
these a second and only `schemas.decode` ever creates them from untrusted input, so the
validation cost is paid once there. Attribute names are the legacy DB column names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["REDIS_FIELD_NAMES", "HealthRecord", "to_redis_fields"]


@dataclass(slots=True, frozen=True, kw_only=True)
class HealthRecord:
    """One reading of one device, as stored in `t_user_health_data` (+ the daily/weekly rows).

    Vital signs keep 0 as sent: 0 means "not measured" and consumers interpret it.
    `None` means the field was absent from the message.
    """

    device_sn: str
    timestamp: datetime  # device local time as sent, naive
    customer_id: int | None = None
    org_id: int | None = None
    user_id: int | None = None
    heart_rate: int | None = None
    blood_oxygen: int | None = None
    temperature: Decimal | None = None  # 2 dp
    pressure_high: int | None = None
    pressure_low: int | None = None
    stress: int | None = None
    step: int | None = None
    distance: Decimal | None = None  # 2 dp
    calorie: Decimal | None = None  # 2 dp
    latitude: Decimal | None = None  # 6 dp
    longitude: Decimal | None = None  # 6 dp
    altitude: Decimal | None = None  # 2 dp
    sleep: Decimal | None = None  # hours, 2 dp, derived from sleep_data
    upload_method: str | None = None
    # Slow-changing payloads, compact JSON text; None when absent or "null".
    sleep_data: str | None = None
    exercise_daily_data: str | None = None
    exercise_week_data: str | None = None
    scientific_sleep_data: str | None = None
    workout_data: str | None = None


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


def _timestamp(value: datetime) -> str:
    return value.isoformat(" ", "seconds")


# Legacy Redis hash field -> (record attribute, formatter), in the legacy order.
_REDIS_FIELDS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("deviceSn", "device_sn", str),
    ("heart_rate", "heart_rate", str),
    ("blood_oxygen", "blood_oxygen", str),
    ("body_temperature", "temperature", _one_decimal),
    ("blood_pressure_systolic", "pressure_high", str),
    ("blood_pressure_diastolic", "pressure_low", str),
    ("stress", "stress", str),
    ("step", "step", str),
    ("distance", "distance", _one_decimal),
    ("calorie", "calorie", _one_decimal),
    ("latitude", "latitude", _plain),
    ("longitude", "longitude", _plain),
    ("altitude", "altitude", _plain),
    ("timestamp", "timestamp", _timestamp),
    ("customer_id", "customer_id", str),
    ("org_id", "org_id", str),
    ("user_id", "user_id", str),
)

REDIS_FIELD_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _REDIS_FIELDS)


def to_redis_fields(record: HealthRecord) -> dict[str, str]:
    """The legacy `health_data:{sn}` hash fields, so existing dashboards keep reading them.

    Absent (None) values are skipped rather than written as "None", so a reading that did
    not carry a field leaves the previous value in the hash.
    """
    fields: dict[str, str] = {}
    for name, attr, fmt in _REDIS_FIELDS:
        value = getattr(record, attr)
        if value is not None:
            fields[name] = fmt(value)
    return fields
