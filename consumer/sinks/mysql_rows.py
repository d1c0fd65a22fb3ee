"""Map normalized records to the rows of the MySQL tables (pure, unit-tested without a DB).

Daily/weekly rows are merged inside a batch first, so one statement carries one row per
key: the newest reading's non-null slow field wins, older ones only fill gaps.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from schemas.record import HealthRecord

HEALTH_COLUMNS: tuple[str, ...] = (
    "device_sn",
    "user_id",
    "org_id",
    "customer_id",
    "heart_rate",
    "pressure_high",
    "pressure_low",
    "blood_oxygen",
    "stress",
    "step",
    "temperature",
    "latitude",
    "longitude",
    "altitude",
    "distance",
    "calorie",
    "sleep",
    "timestamp",
    "upload_method",
)

DAILY_FIELDS: tuple[str, ...] = (
    "sleep_data",
    "exercise_daily_data",
    "workout_data",
    "scientific_sleep_data",
)
WEEKLY_FIELDS: tuple[str, ...] = ("exercise_week_data",)
PARTY_FIELDS: tuple[str, ...] = ("customer_id", "org_id", "user_id")

health_row: Any = attrgetter(*HEALTH_COLUMNS)


@dataclass(slots=True)
class SlowRow:
    """One daily or weekly row: (device_sn, period start) plus merged slow fields."""

    device_sn: str
    period: dt.date
    parties: dict[str, int | None]
    fields: dict[str, str | None]
    data_timestamp: dt.datetime

    def as_tuple(self, field_names: tuple[str, ...]) -> tuple[Any, ...]:
        return (
            self.device_sn,
            *(self.parties[p] for p in PARTY_FIELDS),
            self.period,
            *(self.fields[f] for f in field_names),
            self.data_timestamp,
        )


def week_start(day: dt.date) -> dt.date:
    """Monday of the day's ISO week."""
    return day - dt.timedelta(days=day.weekday())


def _merge(
    records: list[HealthRecord], field_names: tuple[str, ...], weekly: bool
) -> list[SlowRow]:
    rows: dict[tuple[str, dt.date], SlowRow] = {}
    # Oldest first, so newer readings overwrite and older ones only fill what is missing.
    for record in sorted(records, key=attrgetter("timestamp")):
        values = {f: getattr(record, f) for f in field_names}
        if all(v is None for v in values.values()):
            continue
        day = record.timestamp.date()
        period = week_start(day) if weekly else day
        key = (record.device_sn, period)
        parties = {p: getattr(record, p) for p in PARTY_FIELDS}
        row = rows.get(key)
        if row is None:
            rows[key] = SlowRow(record.device_sn, period, parties, values, record.timestamp)
            continue
        row.fields.update({f: v for f, v in values.items() if v is not None})
        row.parties.update({p: v for p, v in parties.items() if v is not None})
        row.data_timestamp = record.timestamp
    return list(rows.values())


def daily_rows(records: list[HealthRecord]) -> list[SlowRow]:
    return _merge(records, DAILY_FIELDS, weekly=False)


def weekly_rows(records: list[HealthRecord]) -> list[SlowRow]:
    return _merge(records, WEEKLY_FIELDS, weekly=True)
