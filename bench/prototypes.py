"""Faster versions of hot consumer functions, written only to size the savings (bench/stages.py).

Nothing here is used by the consumer: the owners of consumer/ decide whether and how to
adopt an idea. Each prototype must give exactly what the real function gives for the
benchmark's records; `check()` asserts that before any timing, so a saving is never
measured on different output.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
from pymysql.converters import escape_string

from consumer.db.tables import UPLOAD_METHODS as LEGACY_UPLOAD_METHODS
from consumer.pipeline.binding import Binding
from consumer.sinks.mysql_rows import (
    SlowRow,
    daily_rows,
    render_health_values,
    weekly_rows,
)
from consumer.sinks.redis_hash import legacy_hash
from schemas.decode import _build_record
from schemas.record import HealthRecord

_TENTH = Decimal("0.1")
_ONE_DECIMAL: dict[Decimal, str] = {}
_PLAIN: dict[Decimal, str] = {}
_SN_SQL: dict[str, str] = {}
_METHOD: dict[str | None, str] = {None: "wifi", "": "wifi", "4g": "esim"}
_METHOD.update({m: m for m in LEGACY_UPLOAD_METHODS})


def _one_decimal(value: Decimal | None) -> str:
    """consumer.sinks.redis_hash._one_decimal, memoized (a few hundred distinct values)."""
    if value is None:
        return ""
    text = _ONE_DECIMAL.get(value)
    if text is None:
        text = str(value.quantize(_TENTH, rounding=ROUND_HALF_UP))
        if len(_ONE_DECIMAL) < 100_000:
            _ONE_DECIMAL[value] = text
    return text


def _plain(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = _PLAIN.get(value)
    if text is None:
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        text = "0" if text == "-0" else text
        if len(_PLAIN) < 100_000:
            _PLAIN[value] = text
    return text


def _s(value: object) -> str:
    return "" if value is None else str(value)


def redis_args(r: HealthRecord) -> tuple[str, bytes]:
    """What RedisSink._apply sends per device (timestamp, JSON [sn, field, value, ...]),
    built in one list instead of a dict of 24 formatter calls."""
    ts = r.timestamp.strftime("%Y-%m-%d %H:%M:%S")
    method = _METHOD.get(r.upload_method)
    if method is None:
        method = "common_event"
    flat = [
        r.device_sn,
        "uploadMethod",
        method,
        "heartRate",
        _s(r.heart_rate),
        "pressureHigh",
        _s(r.pressure_high),
        "pressureLow",
        _s(r.pressure_low),
        "bloodOxygen",
        _s(r.blood_oxygen),
        "temperature",
        _one_decimal(r.temperature),
        "stress",
        _s(r.stress),
        "step",
        _s(r.step),
        "timestamp",
        ts,
        "deviceSn",
        r.device_sn,
        "distance",
        _one_decimal(r.distance),
        "calorie",
        _one_decimal(r.calorie),
        "latitude",
        _plain(r.latitude),
        "longitude",
        _plain(r.longitude),
        "altitude",
        _plain(r.altitude),
        "customerId",
        _s(r.customer_id),
        "customer_id",
        _s(r.customer_id),
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


def redis_args_current(r: HealthRecord) -> tuple[str, bytes]:
    """The same thing the way consumer/sinks/redis.py RedisSink._apply builds it today."""
    fields = legacy_hash(r)
    flat: list[str] = [r.device_sn]
    for name, value in fields.items():
        flat.append(name)
        flat.append(value)
    return fields["timestamp"], orjson.dumps(flat)


def _sql_sn(sn: str) -> str:
    text = _SN_SQL.get(sn)
    if text is None:
        text = "'" + escape_string(sn) + "'"
        if len(_SN_SQL) < 200_000:
            _SN_SQL[sn] = text
    return text


def render_values(records: list[HealthRecord]) -> str:
    """render_health_values without a function call per field: None checks inline, the
    quoted SN memoized, the timestamp through isoformat."""
    rows: list[str] = []
    append = rows.append
    for r in records:
        up = r.upload_method
        append(
            f"({_sql_sn(r.device_sn)},"
            f"{'NULL' if r.user_id is None else r.user_id},"
            f"{'NULL' if r.org_id is None else r.org_id},"
            f"{'NULL' if r.customer_id is None else r.customer_id},"
            f"{'NULL' if r.heart_rate is None else r.heart_rate},"
            f"{'NULL' if r.pressure_high is None else r.pressure_high},"
            f"{'NULL' if r.pressure_low is None else r.pressure_low},"
            f"{'NULL' if r.blood_oxygen is None else r.blood_oxygen},"
            f"{'NULL' if r.stress is None else r.stress},"
            f"{'NULL' if r.step is None else r.step},"
            f"{'NULL' if r.temperature is None else r.temperature},"
            f"{'NULL' if r.latitude is None else r.latitude},"
            f"{'NULL' if r.longitude is None else r.longitude},"
            f"{'NULL' if r.altitude is None else r.altitude},"
            f"{'NULL' if r.distance is None else r.distance},"
            f"{'NULL' if r.calorie is None else r.calorie},"
            f"{'NULL' if r.sleep is None else r.sleep},"
            f"'{r.timestamp.isoformat(' ')}',"
            f"{'NULL' if up is None else _sql_sn(up)})"
        )
    return ",".join(rows)


def _has_slow(r: HealthRecord) -> bool:
    return (
        r.sleep_data is not None
        or r.exercise_daily_data is not None
        or r.workout_data is not None
        or r.scientific_sleep_data is not None
        or r.exercise_week_data is not None
    )


def slow_rows(records: list[HealthRecord]) -> tuple[list[SlowRow], list[SlowRow]]:
    """daily_rows + weekly_rows, skipping the readings without slow fields before the
    sort and the per-reading dicts (most readings carry none)."""
    slow = [r for r in records if _has_slow(r)]
    if not slow:
        return [], []
    return daily_rows(slow), weekly_rows(slow)


def bind_fast(r: HealthRecord, b: Binding) -> HealthRecord:
    """binding.bind with schemas.decode's positional builder instead of dataclasses.replace."""
    if r.customer_id is not None and r.org_id is not None and r.user_id is not None:
        return r
    return _build_record(
        r.device_sn,
        r.timestamp,
        b.customer_id if r.customer_id is None else r.customer_id,
        b.org_id if r.org_id is None else r.org_id,
        b.user_id if r.user_id is None else r.user_id,
        r.heart_rate,
        r.blood_oxygen,
        r.temperature,
        r.pressure_high,
        r.pressure_low,
        r.stress,
        r.step,
        r.distance,
        r.calorie,
        r.latitude,
        r.longitude,
        r.altitude,
        r.sleep,
        r.upload_method,
        r.sleep_data,
        r.exercise_daily_data,
        r.exercise_week_data,
        r.scientific_sleep_data,
        r.workout_data,
    )


def check(batches: list[list[HealthRecord]], bound: list[list[HealthRecord]], b: Any) -> None:
    """Every prototype gives what the real function gives, on the benchmark's records."""
    from consumer.pipeline.binding import bind

    for batch, done in zip(batches, bound, strict=True):
        assert [bind_fast(r, b) for r in batch] == [bind(r, b) for r in batch]
        assert render_values(done) == render_health_values(done)
        assert slow_rows(done) == (daily_rows(done), weekly_rows(done))
        for r in done:
            assert redis_args(r) == redis_args_current(r), r
    assert dt.datetime(2025, 1, 1, 2, 3, 4).isoformat(" ") == "2025-01-01 02:03:04"
