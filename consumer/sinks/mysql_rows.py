"""Map normalized records to the rows of the MySQL tables (pure, unit-tested without a DB).

Daily/weekly rows are merged inside a batch first, so one statement carries one row per
key: the newest reading's non-null slow field wins, older ones only fill gaps.
Health and alert rows carry the legacy ljwx values (docs/legacy-compatibility.md): the
`upload_method` ENUM, `customer_id` 0 for an unbound device, the alert's production columns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter
from typing import Any

from pymysql.converters import escape_string

from consumer.db.tables import (
    ALERT_COLUMNS,
    ALERT_DESC_LENGTH,
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    UPLOAD_METHOD_RAW_LENGTH,
    UPLOAD_METHODS,
    WEEKLY_FIELDS,
)
from consumer.health_alerts.rules import Alert
from schemas.record import HealthRecord

__all__ = ["ALERT_COLUMNS", "DAILY_FIELDS", "HEALTH_COLUMNS", "PARTY_FIELDS", "WEEKLY_FIELDS"]

PARTY_FIELDS: tuple[str, ...] = ("customer_id", "org_id", "user_id")

# Every value the decoder or a device may send -> the legacy ENUM value. Missing means
# wifi (the legacy default); '4g' is the old firmware's name of esim. Anything else is
# stored as 'common_event', the legacy's value for "not a regular uplink", so an unknown
# uplink never inflates the wifi count; upload_method_raw keeps what was sent.
_UPLOAD_METHOD_OF: dict[str | None, str] = {None: "wifi", "": "wifi", "4g": "esim"}
_UPLOAD_METHOD_OF.update((m, m) for m in UPLOAD_METHODS)
UNKNOWN_UPLOAD_METHOD = "common_event"


def legacy_upload_method(raw: str | None) -> str:
    """The legacy ENUM value for the upload method a reading carried (case and blanks
    ignored)."""
    known = _UPLOAD_METHOD_OF.get(raw)
    if known is not None:
        return known
    assert raw is not None
    return _UPLOAD_METHOD_OF.get(raw.strip().lower(), UNKNOWN_UPLOAD_METHOD)


# physical sign field (HealthRecord attribute) -> the unit the legacy shows next to it.
UNITS: dict[str, str] = {
    "heart_rate": "bpm",
    "blood_oxygen": "%",
    "temperature": "°C",
    "pressure_high": "mmHg",
    "pressure_low": "mmHg",
    "step": "steps",
    "calorie": "kcal",
    "sleep": "h",
}


def alert_unit(field: str) -> str | None:
    """The unit of the violating value; None where the device defines none (stress)."""
    return UNITS.get(field)


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


def _sql_str(value: str | None) -> str:
    return "NULL" if value is None else "'" + escape_string(value) + "'"


def health_row(record: HealthRecord) -> dict[str, Any]:
    """The written columns of one reading's row: the readable reference of
    `render_health_values` (the unit tests compare the two)."""
    row: dict[str, Any] = {c: getattr(record, c, None) for c in HEALTH_COLUMNS}
    row["customer_id"] = record.customer_id or 0
    row["upload_method"] = legacy_upload_method(record.upload_method)
    row["upload_method_raw"] = _raw_method(record.upload_method)
    return row


def _raw_method(raw: str | None) -> str | None:
    return None if raw is None else raw[:UPLOAD_METHOD_RAW_LENGTH]


def render_health_values(records: list[HealthRecord]) -> str:
    """The VALUES list of the health insert as SQL literals, one f-string per row.

    PyMySQL's generic `executemany` escapes every parameter through a type dispatch, which
    cost a third of the consumer's CPU at 15k records/s. Every field here has a type the
    decoder guarantees (int, Decimal, datetime, str), so each is rendered directly: numbers
    with `str`, strings with PyMySQL's own `escape_string`, and NULL for None.
    The session's sql_mode (set by the engine) keeps backslash escapes meaningful.
    The column order is HEALTH_COLUMNS' (tables.py lists the written columns first).
    """
    rows: list[str] = []
    append = rows.append
    method_of = legacy_upload_method
    for r in records:
        raw = r.upload_method
        append(
            f"({_sql_str(r.device_sn)},{_n(r.user_id)},{_n(r.org_id)},{r.customer_id or 0},"
            f"{_n(r.heart_rate)},{_n(r.pressure_high)},{_n(r.pressure_low)},"
            f"{_n(r.blood_oxygen)},{_n(r.stress)},{_n(r.step)},{_n(r.temperature)},"
            f"{_n(r.latitude)},{_n(r.longitude)},{_n(r.altitude)},{_n(r.distance)},"
            f"{_n(r.calorie)},{_n(r.sleep)},'{r.timestamp:%Y-%m-%d %H:%M:%S}',"
            f"'{method_of(raw)}',{_sql_str(_raw_method(raw))})"
        )
    return ",".join(rows)


def _n(value: int | Decimal | None) -> str:
    return "NULL" if value is None else str(value)


def alert_row(alert: Alert, health_id: int | None) -> tuple[Any, ...]:
    """The t_alert_info row of one alert, in ALERT_COLUMNS order, with the production
    columns the legacy bigscreen reads (status, level, metric, value, unit, occur_at)."""
    rule, r = alert.rule, alert.record
    # A legacy rule may leave severity_level NULL; the alert column is NOT NULL.
    severity = rule.severity_level or "minor"
    values: dict[str, Any] = {
        "rule_id": rule.id,
        "alert_type": rule.rule_type,
        "device_sn": r.device_sn,
        "alert_timestamp": r.timestamp,
        "alert_desc": alert.description[:ALERT_DESC_LENGTH],
        "severity_level": severity,
        "alert_status": "pending",
        "health_id": health_id,
        "customer_id": r.customer_id or 0,
        "org_id": r.org_id,
        "user_id": r.user_id,
        "source": "server",
        "metric": rule.physical_sign,
        "value": alert.value,
        "unit": alert_unit(alert.field),
        "level": rule.level or severity,
        "status": "NEW",
        "occur_at": r.timestamp,
    }
    return tuple(values[c] for c in ALERT_COLUMNS)
