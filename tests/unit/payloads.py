"""Realistic health-data payloads, as watches, gateways and relays send them.

Shared by the contract, export and publish tests (and usable by anyone who needs a
plausible message): start from a real upload and change only what a test is about.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

SAMPLE_SN = "CRFTQ23409001890"

# A real watch upload (cache flush of one reading), byte for byte.
SAMPLE_UPLOAD = (
    b'{"data":[{"deviceSn":"CRFTQ23409001890","heart_rate":66,"blood_oxygen":98,'
    b'"body_temperature":"0.0","step":0,"distance":"0.0","calorie":"0.0","latitude":"0",'
    b'"longitude":"0","altitude":"0","stress":0,"upload_method":"wifi",'
    b'"blood_pressure_systolic":107,"blood_pressure_diastolic":74,'
    b'"timestamp":"2025-05-31 21:18:24"}]}'
)
SAMPLE_READING: dict[str, Any] = orjson.loads(SAMPLE_UPLOAD)["data"][0]

# Slow fields as the watch sends them: JSON text inside the JSON.
SLEEP_DATA = (
    '{"code":0,"data":[{"endTimeStamp":1757829480000,"startTimeStamp":1757815560000,'
    '"type":2}],"name":"sleep","type":"history"}'
)
SLEEP_HOURS = "3.87"  # (1757829480000 - 1757815560000) ms = 3.8667 h
EXERCISE_DAILY_DATA = (
    '{"code":0,"data":[{"calorie":1405,"distance":2460,"step":3512,"strengthTimes":0,'
    '"timeStamp":1748620800000}],"name":"exercise","type":"daily"}'
)
EXERCISE_WEEK_DATA = (
    '{"code":0,"data":[{"calorie":9120,"distance":15980,"step":22870,'
    '"weekStart":1748188800000}],"name":"exercise","type":"week"}'
)
SCIENTIFIC_SLEEP_DATA = (
    '{"code":0,"data":{"deepSleep":95,"lightSleep":112,"rem":25,"awake":0,'
    '"score":82},"name":"scientificSleep"}'
)
WORKOUT_DATA = (
    '{"code":0,"data":[{"sportType":4,"startTimeStamp":1748671200000,'
    '"endTimeStamp":1748673000000,"heartRateAvg":128,"calorie":210}],"name":"workout"}'
)
SLOW_FIELDS: dict[str, str] = {
    "sleepData": SLEEP_DATA,
    "exerciseDailyData": EXERCISE_DAILY_DATA,
    "exerciseWeekData": EXERCISE_WEEK_DATA,
    "scientificSleepData": SCIENTIFIC_SLEEP_DATA,
    "workoutData": WORKOUT_DATA,
}

ABSENT: Any = object()  # an override that removes the key from the reading


def watch_reading(**overrides: Any) -> dict[str, Any]:
    """The sample reading of a worn watch (real vitals, GPS fix), with overrides applied;
    `key=ABSENT` drops a key."""
    reading = copy.deepcopy(SAMPLE_READING)
    reading.update(
        body_temperature="36.5",
        step=3512,
        distance="2.4",
        calorie="140.5",
        latitude="22.543096",
        longitude="114.057865",
        altitude="12.0",
        stress=35,
    )
    for key, value in overrides.items():
        if value is ABSENT:
            reading.pop(key, None)
        else:
            reading[key] = value
    return reading


def legacy_reading(**overrides: Any) -> dict[str, Any]:
    """The same measurement from old firmware that uses the pinyin short names."""
    reading: dict[str, Any] = {
        "id": SAMPLE_SN,
        "xlv": 66,
        "xy": 98,
        "tw": "36.5",
        "gxy": 107,
        "dxy": 74,
        "bs": 3512,
        "jl": "2.4",
        "rl": "140.5",
        "yl": 35,
        "wd": "22.543096",
        "jd": "114.057865",
        "hb": "12.0",
        "uploadMethod": "4g",
        "cjsj": "2025-05-31 21:18:24",
        "smData": SLEEP_DATA,
        "ydData": EXERCISE_DAILY_DATA,
        "ydWeekData": EXERCISE_WEEK_DATA,
        "kxsmData": SCIENTIFIC_SLEEP_DATA,
    }
    reading.update(overrides)
    return reading


def camel_reading(**overrides: Any) -> dict[str, Any]:
    """The same measurement from the app SDK, which uses camelCase names."""
    reading: dict[str, Any] = {
        "deviceSn": SAMPLE_SN,
        "heartRate": 66,
        "bloodOxygen": 98,
        "temperature": "36.5",
        "pressureHigh": 107,
        "pressureLow": 74,
        "step": 3512,
        "distance": "2.4",
        "calorie": "140.5",
        "stress": 35,
        "latitude": "22.543096",
        "longitude": "114.057865",
        "altitude": "12.0",
        "uploadMethod": "wifi",
        "timestamp": "2025-05-31 21:18:24",
        "customerId": 1001,
        "orgId": 2001,
        "userId": 3001,
        "sleepData": SLEEP_DATA,
        "exerciseDailyWeekData": EXERCISE_WEEK_DATA,
    }
    reading.update(overrides)
    return reading


def cache_flush(count: int, **overrides: Any) -> list[dict[str, Any]]:
    """`count` (< 2520) consecutive readings a watch flushes after being offline."""
    return [
        watch_reading(timestamp=f"2025-05-31 21:{18 + i // 60:02d}:{i % 60:02d}", **overrides)
        for i in range(count)
    ]


def envelope(data: Any, **top: Any) -> dict[str, Any]:
    """`{"data": ...}` plus top-level fields such as customerId."""
    return {"data": data, **top}


def relay(data: Any, **top: Any) -> dict[str, Any]:
    """A Bluetooth relay's `{"data": {"data": ...}}`; `top` goes on the relay level."""
    return {"data": {"data": data, **top}}


def encode(message: Any) -> bytes:
    return orjson.dumps(message)
