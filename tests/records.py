"""Build HealthRecords for tests without going through the wire format."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from schemas.record import HealthRecord

BASE_TIME = dt.datetime(2025, 5, 31, 21, 18, 24)


def make_record(
    device_sn: str = "CRFTQ23409001890",
    *,
    seconds: int = 0,
    **fields: Any,
) -> HealthRecord:
    values: dict[str, Any] = {
        "device_sn": device_sn,
        "customer_id": 1001,
        "org_id": 2001,
        "user_id": 3001,
        "heart_rate": 66,
        "blood_oxygen": 98,
        "temperature": Decimal("36.50"),
        "pressure_high": 107,
        "pressure_low": 74,
        "stress": 20,
        "step": 100,
        "distance": Decimal("70.0"),
        "calorie": Decimal("4.0"),
        "latitude": Decimal("22.543096"),
        "longitude": Decimal("114.057865"),
        "altitude": Decimal("12.0"),
        "sleep": None,
        "timestamp": BASE_TIME + dt.timedelta(seconds=seconds),
        "upload_method": "wifi",
        "sleep_data": None,
        "exercise_daily_data": None,
        "exercise_week_data": None,
        "scientific_sleep_data": None,
        "workout_data": None,
    }
    values.update(fields)
    return HealthRecord(**values)
