"""The typed fast path: what real watches send, decoded without the pydantic models.

Pydantic validation plus a model-to-record copy costs several times the budget, so a
watch's upload (`{"data": [reading, ...]}`, nearly every message) is parsed by msgspec
straight into typed Structs (`watch_records`), and any other reading dict is looked up
field by field (`fast_record`). Whenever either is not sure - a numeric string, a float,
a duplicate alias, any value it would reject - it answers None and `schemas.decode` hands
the message or reading to the model, which is the contract and writes the error
messages. The unit tests hold both paths to the model (tests/unit/test_decode_fast.py and
the hypothesis agreement tests).

What is not written here: names, types and ranges. The wire names come from the model
(`ALIASES`), the Struct's field types from the model's field types (`_WATCH_TYPES`),
the ranges and the uplinks from `schemas.clean`; only what a watch sends, and in which
order, is stated here (`WATCH_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, make_dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from pydantic import AliasChoices
from pydantic_core import PydanticCustomError

from schemas.clean import (
    ALTITUDE_MAX,
    AMOUNT_MAX,
    AMOUNT_MIN,
    BLOOD_OXYGEN_MAX,
    CENT,
    DEVICE_SN_MAX,
    DEVICE_SN_RE,
    HEART_RATE_MAX,
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    LATITUDE_MAX,
    LONGITUDE_MAX,
    MAX_TIMESTAMP,
    MICRO,
    MIN_TIMESTAMP,
    PRESSURE_MAX,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
    UPLOAD_METHODS,
    normalize_upload_method,
    sleep_field,
    slow_field,
    to_party_id,
)
from schemas.reading import ALIASES, Parties, Reading
from schemas.record import HealthRecord

__all__ = ["WATCH_FIELDS", "fast_record", "watch_records"]

# What a watch sends, by primary wire name, in the order watches send them
# (tests/unit/payloads.py SAMPLE_UPLOAD: msgspec looks for each key first where the
# previous one was found). The ids are what a phone relay or an enriching gateway adds.
WATCH_FIELDS = (
    "deviceSn",
    "heart_rate",
    "blood_oxygen",
    "body_temperature",
    "step",
    "distance",
    "calorie",
    "latitude",
    "longitude",
    "altitude",
    "stress",
    "upload_method",
    "blood_pressure_systolic",
    "blood_pressure_diastolic",
    "timestamp",
    "customerId",
    "orgId",
    "userId",
)
_IDS = frozenset({"customerId", "orgId", "userId"})
_PRIMARY_NAMES = frozenset(ALIASES.values())
# What a watch sends in every reading; a reading with only these keys has no ids, slow
# fields or aliases to look at, which saves a dozen look-ups on the hot path.
_COMMON_NAMES = frozenset(WATCH_FIELDS) - _IDS
# The usual uplinks: a dict hit on the hot path skips normalizing (kept as sent).
_KNOWN_METHODS = {m: m for m in UPLOAD_METHODS}

# The model's field type (its annotation's name) -> the one type a watch sends it as:
# exact JSON types, vitals in range as Meta constraints, decimals as their text (the
# caches below convert them), only the usual uplinks (any other one, or another case,
# goes the general way and comes out normalized).
_WATCH_TYPES: dict[str, Any] = {
    "DeviceSn": str,
    "Timestamp": str,
    "HeartRate": Annotated[int, Meta(ge=0, le=HEART_RATE_MAX)],
    "BloodOxygen": Annotated[int, Meta(ge=0, le=BLOOD_OXYGEN_MAX)],
    "Pressure": Annotated[int, Meta(ge=0, le=PRESSURE_MAX)],
    "Count": Annotated[int, Meta(ge=0, le=INT32_MAX)],
    "Temperature": str,
    "Amount": str,
    "Latitude": str,
    "Longitude": str,
    "Altitude": str,
    "UploadMethod": Literal[UPLOAD_METHODS],
    "PartyId": Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)],  # as _party takes an int
}


def _watch_struct_fields() -> list[tuple[str, Any] | tuple[str, Any, None]]:
    """`WATCH_FIELDS` with the type the model gives each (required ones stay required)."""
    attr_of: dict[str, str] = {}
    for attr, info in Reading.model_fields.items():
        alias = info.validation_alias
        assert isinstance(alias, AliasChoices)
        attr_of[str(alias.choices[0])] = attr
    out: list[tuple[str, Any] | tuple[str, Any, None]] = []
    for name in WATCH_FIELDS:
        attr = attr_of[name]
        kind = _WATCH_TYPES[str(Reading.__annotations__[attr])]
        required = Reading.model_fields[attr].is_required()
        out.append((name, kind) if required else (name, kind | None, None))
    return out


_SN_CACHE_LIMIT = 100_000  # about a fleet; ~10 MB at most
_fromisoformat = datetime.fromisoformat
_sn_match = DEVICE_SN_RE.fullmatch
_SLOW_NULL = ("null", None)
# A timestamp's separators, at [4], [7], [10], [13], [16] of "yyyy-MM-dd HH:mm:ss": one
# slice and compare instead of five, which together with len() == 19 pins the layout;
# fromisoformat() then checks the digits. The unit tests hold this to TIMESTAMP_RE.
_TIMESTAMP_SEPARATORS = slice(4, 17, 3)


class _Unsure(Exception):
    """The fast path defers this reading to the model."""


# Characters of the only decimal text converted outside the model; see _Decimals.
_NUMERAL_CHARS = "0123456789.-"
_NUMERAL_MAX = 32  # longer text goes to the model, and never into a cache
# Per field: ~200 bytes an entry, ~3 MB when full. Holds a day of distance and calorie
# text ("%.1f" of what a watch counts).
_CACHE_LIMIT = 1 << 14


class _Decimals(dict[object, Decimal | None]):
    """A decimal field: wire value -> its Decimal, quantized as the model does, memoized.

    `field[value]` is the whole hot path: a value seen before costs one dict look-up in
    C and no Python call (None, "not sent", is a permanent entry). Most readings repeat
    a few texts ("0", "0.0", a temperature), but distance, calorie and GPS vary per
    reading, so a miss must be cheap too. `__missing__` converts without a regex: one
    str.strip() for the characters, then Decimal's own parser for the grammar, which
    with only digits, "." and "-" leaves an optional leading minus and digits with at
    most one point (a subset of the model's grammar, read to the same value); and no
    quantize() when the text already has the field's decimals ("%.6f" GPS). Anything
    else raises _Unsure (the model decides), an unhashable value TypeError (likewise).

    Only text that needed rounding is memoized. Text already at the field's scale is a
    GPS fix ("%.6f"), a new value almost every time: memoizing fixes only churned the
    cache and cost time per reading (docs/performance.md, "Figures behind the design
    notes"). When full the cache starts over rather than keeping its first values
    forever, so it follows the values of the moment (today's distances).
    """

    __slots__ = ("exp", "high", "low", "point", "zero")

    def __init__(self, low: Decimal, high: Decimal, exp: Decimal) -> None:
        super().__init__({None: None})
        self.low = low
        self.high = high
        self.exp = exp
        places = len(str(exp)) - 2  # "0.01" -> 2
        self.point = slice(-places - 1, -places)  # where "." is in text with `places` decimals
        self.zero = Decimal(0).quantize(exp)  # zero as quantize() gives it, without sign

    def __missing__(self, value: object) -> Decimal | None:
        if type(value) is str:
            if len(value) > _NUMERAL_MAX or value.strip(_NUMERAL_CHARS):
                raise _Unsure
            try:
                number = Decimal(value)
            except ArithmeticError:  # InvalidOperation: "", "-", "1.2.3", "1-2"
                raise _Unsure from None
            quantized = value[self.point] == "."
        elif type(value) is int:  # a JSON integer
            number = Decimal(value)
            quantized = False
        elif value is None:  # only while another thread is between clear() and the line after
            return None
        else:
            raise _Unsure
        if not self.low <= number <= self.high:  # on the value as sent, as the model does
            raise _Unsure
        if not number:
            number = self.zero  # "-0.0": quantize() would keep the sign, the model drops it
        elif not quantized:
            number = number.quantize(self.exp, rounding=ROUND_HALF_UP)
            if not number:  # "-0.001"
                number = self.zero
        if type(value) is str and not quantized:  # not an int: 1 == 1.0 == True finds it
            if len(self) >= _CACHE_LIMIT:
                self.clear()
                self[None] = None
            self[value] = number
        return number


_TEMPERATURE = _Decimals(TEMPERATURE_MIN, TEMPERATURE_MAX, CENT)
_DISTANCE = _Decimals(AMOUNT_MIN, AMOUNT_MAX, CENT)
_CALORIE = _Decimals(AMOUNT_MIN, AMOUNT_MAX, CENT)
_LATITUDE = _Decimals(-LATITUDE_MAX, LATITUDE_MAX, MICRO)
_LONGITUDE = _Decimals(-LONGITUDE_MAX, LONGITUDE_MAX, MICRO)
_ALTITUDE = _Decimals(-ALTITUDE_MAX, ALTITUDE_MAX, CENT)
_known_sns: set[str] = set()


def _party(value: object, default: int | None) -> int | None:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value or default  # 0: unknown, as to_party_id says
    try:
        number = to_party_id(value)
    except PydanticCustomError:
        raise _Unsure from None
    return default if number is None else number


def _slow(value: object) -> str | None:
    try:
        return slow_field(value)
    except PydanticCustomError:
        raise _Unsure from None


def _sleep(value: object) -> tuple[str | None, Decimal | None]:
    try:
        return sleep_field(value)
    except PydanticCustomError:
        raise _Unsure from None


def _record_builder() -> Callable[..., HealthRecord]:
    """A positional HealthRecord constructor, much faster than the dataclass one.

    A frozen dataclass's __init__ sets each of the 24 fields through object.__setattr__,
    which alone would take a fifth of the per-message budget. A mutable twin with the
    same slots is filled with plain attribute stores, then becomes a HealthRecord by
    __class__ assignment (CPython allows it because the layouts are identical; it raises
    TypeError otherwise, which the self-check below turns into a fallback).
    """
    twin = make_dataclass(
        "_HealthRecordDraft",
        [(f.name, f.type) for f in fields(HealthRecord)],
        slots=True,
        eq=False,
        repr=False,
    )

    def build(*values: Any) -> HealthRecord:
        record = twin(*values)
        record.__class__ = HealthRecord
        return record  # type: ignore[no-any-return]

    def fallback(*values: Any) -> HealthRecord:
        return HealthRecord(**dict(zip(_FIELD_NAMES, values, strict=True)))

    try:
        probe = build(*(f"probe-{name}" for name in _FIELD_NAMES))
    except TypeError:
        return fallback
    if probe != fallback(*(f"probe-{name}" for name in _FIELD_NAMES)):
        return fallback
    return build


_FIELD_NAMES = tuple(f.name for f in fields(HealthRecord))
_build_record = _record_builder()


def fast_record(raw: dict[str, Any], parties: Parties) -> HealthRecord | None:
    """The record of a well-formed reading, or None to let the model decide.

    Unrolled on purpose: a loop over a table of fields costs a third more per reading.
    """
    common = _COMMON_NAMES.issuperset(raw)
    if not common and not _PRIMARY_NAMES.issuperset(raw):
        renamed: dict[str, Any] = {}
        for key, value in raw.items():
            primary = ALIASES.get(key)
            if primary is not None:
                if primary in renamed:
                    return None  # sent under two names: the model knows which one wins
                renamed[primary] = value
        raw = renamed
    get = raw.get

    device_sn = get("deviceSn")
    if type(device_sn) is not str:
        return None
    if device_sn not in _known_sns:
        if len(device_sn) > DEVICE_SN_MAX or not _sn_match(device_sn):
            return None
        if len(_known_sns) < _SN_CACHE_LIMIT:
            _known_sns.add(device_sn)
    text = get("timestamp")
    if type(text) is not str or len(text) != 19 or text[_TIMESTAMP_SEPARATORS] != "-- ::":
        return None
    try:
        timestamp = _fromisoformat(text)
    except ValueError:
        return None
    if not MIN_TIMESTAMP <= timestamp < MAX_TIMESTAMP:
        return None

    heart_rate = get("heart_rate")
    if heart_rate is not None and (
        type(heart_rate) is not int or not 0 <= heart_rate <= HEART_RATE_MAX
    ):
        return None
    blood_oxygen = get("blood_oxygen")
    if blood_oxygen is not None and (
        type(blood_oxygen) is not int or not 0 <= blood_oxygen <= BLOOD_OXYGEN_MAX
    ):
        return None
    pressure_high = get("blood_pressure_systolic")
    if pressure_high is not None and (
        type(pressure_high) is not int or not 0 <= pressure_high <= PRESSURE_MAX
    ):
        return None
    pressure_low = get("blood_pressure_diastolic")
    if pressure_low is not None and (
        type(pressure_low) is not int or not 0 <= pressure_low <= PRESSURE_MAX
    ):
        return None
    stress = get("stress")
    if stress is not None and (type(stress) is not int or not 0 <= stress <= INT32_MAX):
        return None
    step = get("step")
    if step is not None and (type(step) is not int or not 0 <= step <= INT32_MAX):
        return None

    try:
        temperature = _TEMPERATURE[get("body_temperature")]
        distance = _DISTANCE[get("distance")]
        calorie = _CALORIE[get("calorie")]
        latitude = _LATITUDE[get("latitude")]
        longitude = _LONGITUDE[get("longitude")]
        altitude = _ALTITUDE[get("altitude")]
        method = get("upload_method")
        if method is not None:
            known = _KNOWN_METHODS.get(method)
            if known is None:
                known = normalize_upload_method(method)
            method = known
    except (_Unsure, TypeError, PydanticCustomError):
        return None

    customer_id, org_id, user_id = parties
    sleep_text = sleep = daily = week = scientific = workout = None
    if not common:
        try:
            if (value := get("customerId")) is not None:
                customer_id = _party(value, customer_id)
            if (value := get("orgId")) is not None:
                org_id = _party(value, org_id)
            if (value := get("userId")) is not None:
                user_id = _party(value, user_id)
            if (value := get("sleepData")) not in _SLOW_NULL:
                sleep_text, sleep = _sleep(value)
            if (value := get("exerciseDailyData")) not in _SLOW_NULL:
                daily = _slow(value)
            if (value := get("exerciseWeekData")) not in _SLOW_NULL:
                week = _slow(value)
            if (value := get("scientificSleepData")) not in _SLOW_NULL:
                scientific = _slow(value)
            if (value := get("workoutData")) not in _SLOW_NULL:
                workout = _slow(value)
        except _Unsure:
            return None

    return _build_record(
        device_sn,
        timestamp,
        customer_id,
        org_id,
        user_id,
        heart_rate,
        blood_oxygen,
        temperature,
        pressure_high,
        pressure_low,
        stress,
        step,
        distance,
        calorie,
        latitude,
        longitude,
        altitude,
        sleep,
        method,
        sleep_text,
        daily,
        week,
        scientific,
        workout,
    )


# ---------------------------------------------------------------------------------------
# Watch uploads: one typed parse
# ---------------------------------------------------------------------------------------

_WatchReading = msgspec.defstruct(
    "_WatchReading",
    _watch_struct_fields(),
    forbid_unknown_fields=True,
    gc=False,
    kw_only=True,
)
# `{"data": [reading, ...]}` or `{"data": reading}`, no envelope ids.
_WatchUpload = msgspec.defstruct(
    "_WatchUpload",
    [("data", list[_WatchReading] | _WatchReading)],  # type: ignore[valid-type]
    forbid_unknown_fields=True,
    gc=False,
)
_parse_watch_upload: Callable[[bytes], Any] = msgspec.json.Decoder(_WatchUpload).decode
_NOT_A_WATCH_UPLOAD = (msgspec.DecodeError, UnicodeDecodeError)


def watch_records(value: bytes, max_readings: int) -> list[HealthRecord] | None:
    """The records of a watch upload, or None to let the general path decide.

    Nearly every message is a watch's upload, and for those orjson's dicts cost more
    than the rest of the decoder: a parse into Python objects, then a look-up, a type
    test and a range test per field. Here msgspec parses in C straight into Structs that
    admit only what a watch sends (above: exact types, vitals in range, known uplinks, no
    other key), so what is left in Python per reading is the SN, the timestamp, the six
    decimal caches and the positional record builder.

    All or nothing: whatever it does not accept (another shape, a wrong type, a value
    out of range, a decimal text the caches defer, one bad reading among many, bytes
    that are not JSON) returns None, and the message is decoded from scratch by the
    general path, so every error, dropped field and reason comes from where it always
    did. What it accepts is what _fast_record accepts of the same reading, with the
    same result; the unit tests hold both to the model.
    """
    try:
        data = _parse_watch_upload(value).data
    except _NOT_A_WATCH_UPLOAD:
        return None
    if isinstance(data, _WatchReading):
        data = [data]
    elif not data or len(data) > max_readings:
        return None
    records: list[HealthRecord] = []
    append = records.append
    try:
        for r in data:
            device_sn = r.deviceSn
            if device_sn not in _known_sns:
                if len(device_sn) > DEVICE_SN_MAX or not _sn_match(device_sn):
                    return None
                if len(_known_sns) < _SN_CACHE_LIMIT:
                    _known_sns.add(device_sn)
            text = r.timestamp
            if len(text) != 19 or text[_TIMESTAMP_SEPARATORS] != "-- ::":
                return None
            timestamp = _fromisoformat(text)  # ValueError: not a date
            if not MIN_TIMESTAMP <= timestamp < MAX_TIMESTAMP:
                return None
            record = _build_record(
                device_sn,
                timestamp,
                r.customerId or None,
                r.orgId or None,
                r.userId or None,
                r.heart_rate,
                r.blood_oxygen,
                _TEMPERATURE[r.body_temperature],
                r.blood_pressure_systolic,
                r.blood_pressure_diastolic,
                r.stress,
                r.step,
                _DISTANCE[r.distance],
                _CALORIE[r.calorie],
                _LATITUDE[r.latitude],
                _LONGITUDE[r.longitude],
                _ALTITUDE[r.altitude],
                None,
                r.upload_method,
                None,
                None,
                None,
                None,
                None,
            )
            append(record)
    except (ValueError, _Unsure):
        return None
    return records
