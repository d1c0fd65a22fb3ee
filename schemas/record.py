"""The normalized reading every consumer stage works with.

A plain frozen slots dataclass rather than a pydantic model: the consumer builds ~50k of
these a second and only `schemas.decode` ever creates them from untrusted input, so the
validation cost is paid once there. Attribute names are the legacy DB column names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = ["HealthRecord"]


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
