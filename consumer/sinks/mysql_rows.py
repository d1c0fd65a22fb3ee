"""Map normalized records to the rows of the MySQL tables (pure, unit-tested without a DB).

Daily/weekly rows are merged inside a batch first, so one statement carries one row per
key: the newest reading's non-null slow field wins, older ones only fill gaps.
Health and alert rows carry the legacy ljwx values (docs/legacy-compatibility.md): the
`upload_method` ENUM, `customer_id` 0 for an unbound device, the alert's production columns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from pymysql.converters import escape_string

from consumer.db.tables import (
    ALERT_COLUMNS,
    ALERT_DESC_LENGTH,
    DAILY_FIELDS,
    HEALTH_COLUMNS,
    LEGACY_UPLOAD_METHOD_ENUM,
    UPLOAD_METHOD_RAW_LENGTH,
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
_UPLOAD_METHOD_OF.update((m, m) for m in LEGACY_UPLOAD_METHOD_ENUM)
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
    # Most readings carry no slow field: drop them before the sort and the per-reading
    # dicts. Filtering keeps the stable sort's order of the readings that remain.
    slow = _with_any(records, field_names)
    # Oldest first, so newer readings overwrite and older ones only fill what is missing.
    for record in sorted(slow, key=attrgetter("timestamp")):
        values = {f: getattr(record, f) for f in field_names}
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


def _with_any(records: list[HealthRecord], field_names: tuple[str, ...]) -> list[HealthRecord]:
    """The records with at least one of these fields set (one C-level getter per record)."""
    if len(field_names) == 1:
        name = field_names[0]
        return [r for r in records if getattr(r, name) is not None]
    get = attrgetter(*field_names)
    nothing = (None,) * len(field_names)
    return [r for r in records if get(r) != nothing]


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


# Memoized text of the values that repeat across readings (the SN of each device, the
# upload method): rendered once, then looked up. Bounded: cleared when full, so a fleet
# larger than the bound costs what it cost before the memo (one escape per reading).
MEMO_LIMIT = 65_536
_SN_SQL: dict[str, str] = {}
_SN_TSV: dict[str, str] = {}
_METHOD_SQL: dict[str | None, str] = {}
_METHOD_TSV: dict[str | None, str] = {}


def _memo(memo: dict[Any, str], key: Any, text: str) -> str:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = text
    return text


def _sn_sql(sn: str) -> str:
    text = _SN_SQL.get(sn)
    return text if text is not None else _memo(_SN_SQL, sn, "'" + escape_string(sn) + "'")


def _method_sql(raw: str | None) -> str:
    """`upload_method` and `upload_method_raw` of a reading, as SQL literals."""
    text = _METHOD_SQL.get(raw)
    if text is None:
        text = _memo(
            _METHOD_SQL, raw, f"'{legacy_upload_method(raw)}',{_sql_str(_raw_method(raw))}"
        )
    return text


def render_health_values(records: list[HealthRecord]) -> str:
    """The VALUES list of the health insert as SQL literals, one f-string per row.

    PyMySQL's generic `executemany` escapes every parameter through a type dispatch, which
    cost a third of the consumer's CPU at 15k records/s. Every field here has a type the
    decoder guarantees (int, Decimal, naive datetime, str), so each is rendered directly:
    ints as they format, Decimals with `str` (`!s`: their `__format__` is 3x slower), the
    timestamp with `isoformat` (5x faster than `strftime`, same text for whole seconds,
    and fractions are cut as `strftime` cut them), strings with PyMySQL's own
    `escape_string`, NULL for None: inline, not one call per field. The SN and the
    upload method repeat across readings and are memoized.
    The session's sql_mode (set by the engine) keeps backslash escapes meaningful.
    The column order is HEALTH_COLUMNS' (tables.py lists the written columns first).
    """
    rows: list[str] = []
    append = rows.append
    sn_get, method_get = _SN_SQL.get, _METHOD_SQL.get
    for r in records:
        sn = sn_get(r.device_sn) or _sn_sql(r.device_sn)
        method = method_get(r.upload_method) or _method_sql(r.upload_method)
        # Two f-strings: CPython compiles one of more than 30 parts into a list and a
        # str.join call instead of one BUILD_STRING (~10% of the render).
        ints = (
            f"({sn},{'NULL' if r.user_id is None else r.user_id},"
            f"{'NULL' if r.org_id is None else r.org_id},{r.customer_id or 0},"
            f"{'NULL' if r.heart_rate is None else r.heart_rate},"
            f"{'NULL' if r.pressure_high is None else r.pressure_high},"
            f"{'NULL' if r.pressure_low is None else r.pressure_low},"
            f"{'NULL' if r.blood_oxygen is None else r.blood_oxygen},"
            f"{'NULL' if r.stress is None else r.stress},"
            f"{'NULL' if r.step is None else r.step},"
        )
        append(
            f"{ints}{'NULL' if r.temperature is None else r.temperature!s},"
            f"{'NULL' if r.latitude is None else r.latitude!s},"
            f"{'NULL' if r.longitude is None else r.longitude!s},"
            f"{'NULL' if r.altitude is None else r.altitude!s},"
            f"{'NULL' if r.distance is None else r.distance!s},"
            f"{'NULL' if r.calorie is None else r.calorie!s},"
            f"{'NULL' if r.sleep is None else r.sleep!s},"
            f"'{r.timestamp.isoformat(' ', 'seconds')}',{method})"
        )
    return ",".join(rows)


# LOAD DATA's default FIELDS ESCAPED BY '\\': these characters are written as escape
# sequences, so a value can hold the field and line terminators; \N is NULL.
_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\x1a": "\\Z"}
)
TSV_NULL = "\\N"


def tsv_text(value: str) -> str:
    """A string as one field of LOAD DATA's default format (FIELDS ESCAPED BY '\\')."""
    return value.translate(_TSV_ESCAPES)


def _sn_tsv(sn: str) -> str:
    text = _SN_TSV.get(sn)
    return text if text is not None else _memo(_SN_TSV, sn, tsv_text(sn))


def _method_tsv(raw: str | None) -> str:
    text = _METHOD_TSV.get(raw)
    if text is None:
        cut = _raw_method(raw)
        text = _memo(
            _METHOD_TSV,
            raw,
            f"{legacy_upload_method(raw)}\t{TSV_NULL if cut is None else tsv_text(cut)}",
        )
    return text


def render_health_tsv(records: list[HealthRecord]) -> str:
    """The health rows as LOAD DATA input: the columns of HEALTH_COLUMNS, tab-separated,
    one line per reading (each ending in a newline), in the server's default escaping:
    `\\N` for NULL, backslash, tab, newline, CR, NUL and Ctrl-Z escaped in strings. Same
    values, same text per value as `render_health_values`, only unquoted."""
    null = TSV_NULL
    rows: list[str] = []
    append = rows.append
    sn_get, method_get = _SN_TSV.get, _METHOD_TSV.get
    for r in records:
        sn = sn_get(r.device_sn) or _sn_tsv(r.device_sn)
        method = method_get(r.upload_method) or _method_tsv(r.upload_method)
        ints = (  # two f-strings, as in render_health_values
            f"{sn}\t{null if r.user_id is None else r.user_id}\t"
            f"{null if r.org_id is None else r.org_id}\t{r.customer_id or 0}\t"
            f"{null if r.heart_rate is None else r.heart_rate}\t"
            f"{null if r.pressure_high is None else r.pressure_high}\t"
            f"{null if r.pressure_low is None else r.pressure_low}\t"
            f"{null if r.blood_oxygen is None else r.blood_oxygen}\t"
            f"{null if r.stress is None else r.stress}\t"
            f"{null if r.step is None else r.step}\t"
        )
        append(
            f"{ints}{null if r.temperature is None else r.temperature!s}\t"
            f"{null if r.latitude is None else r.latitude!s}\t"
            f"{null if r.longitude is None else r.longitude!s}\t"
            f"{null if r.altitude is None else r.altitude!s}\t"
            f"{null if r.distance is None else r.distance!s}\t"
            f"{null if r.calorie is None else r.calorie!s}\t"
            f"{null if r.sleep is None else r.sleep!s}\t"
            f"{r.timestamp.isoformat(' ', 'seconds')}\t{method}\n"
        )
    return "".join(rows)


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
