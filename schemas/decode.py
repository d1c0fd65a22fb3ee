"""Kafka message value (bytes) -> HealthRecords, plus what was wrong with the rest.

Two paths with one meaning. The fast path handles what real watches send (exact types,
values in range), because pydantic validation plus a model-to-record copy costs several
times the budget: a watch's upload (`{"data": [reading, ...]}`, nearly every message) is
parsed by msgspec straight into typed Structs (`_watch_records`); any other message is
parsed by orjson and each reading looked up in its dict (`_fast_record`). Whenever the
fast path is not sure - a numeric string, a float, a duplicate alias, any value it would
reject - it hands over to the pydantic `Reading` model, which is the contract and also
writes the error messages: the typed parse gives the whole message to the dict path,
which gives a reading to the model. `decode_message_reference` runs only the model; the
unit tests check that both agree.

Two kinds of problem, both dead-letter the message once (intake): a `ReadingError` loses
the reading; a `DroppedField` (a slow field whose content is unusable) loses only that
field, because the legacy upload path kept the vital signs of such a reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta
from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from schemas.reading import (
    ALIASES,
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
    Reading,
    json_kind,
    normalize_upload_method,
    shorten,
    sleep_field,
    sleep_hours,
    slow_field,
    to_party_id,
)
from schemas.record import HealthRecord

__all__ = [
    "INVALID_SLOW_FIELD",
    "MAX_MESSAGE_BYTES",
    "MAX_READINGS",
    "DecodedMessage",
    "DroppedField",
    "MessageError",
    "ReadingError",
    "decode_message",
    "decode_message_reference",
    "record_from_reading",
]

MAX_DETAIL = 500
MAX_READINGS = 1000
# Kafka's own default limit (broker/topic message.max.bytes ~1 MiB, librdkafka
# message.max.bytes 1000000, Java max.request.size 1 MiB): a gateway on default settings
# cannot send more, and a full flush of 1000 readings is ~0.4 MB. Parsing 1 MiB costs at
# most ~30 MB (tiny objects, ~29x); a 100 MB flush parsed whole cost ~600 MB.
MAX_MESSAGE_BYTES = 1 << 20

# (customer_id, org_id, user_id) set on the envelope, for readings that carry none.
Parties = tuple[int | None, int | None, int | None]
NO_PARTIES: Parties = (None, None, None)
_PARTY_NAMES = (("customerId", "customer_id"), ("orgId", "org_id"), ("userId", "user_id"))


class MessageError(Exception):
    """The whole message is unusable (it goes to the dead-letter topic as is)."""

    # "message_too_large" | "invalid_json" | "invalid_envelope" | "too_many_readings" |
    # "empty_envelope" | "undecodable" (a bug: an exception decode did not expect)
    reason: str
    detail: str  # human readable, <= 500 chars, names the field/path

    def __init__(self, reason: str, detail: str) -> None:
        detail = _clip(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ReadingError:
    """One reading of the message is invalid; the others are still stored."""

    index: int  # position of the reading in the envelope (0 for a single reading)
    reason: str  # "missing_device_sn" | "invalid_timestamp" | "schema_violation"
    detail: str  # names the field(s) and the problem


INVALID_SLOW_FIELD = "invalid_slow_field"


@dataclass(frozen=True, slots=True)
class DroppedField:
    """A field of a stored reading that could not be kept: the reading is stored without
    it, and the message is dead-lettered so that nothing is dropped silently."""

    index: int  # position of the reading in the envelope
    field: str  # the name as sent (an alias is named as such)
    reason: str  # "invalid_slow_field"
    detail: str  # names the field and the problem


@dataclass(slots=True)
class DecodedMessage:
    records: list[HealthRecord]  # stored readings in envelope order
    errors: list[ReadingError]  # rejected readings
    dropped: list[DroppedField] = field(default_factory=list)  # fields lost, readings kept
    timestamps_defaulted: int = 0  # stored readings that took `default_timestamp`

    def problems(self) -> list[ReadingError | DroppedField]:
        """Both kinds in envelope order: what the dead letter reports."""
        if not self.dropped:
            return list(self.errors)
        if not self.errors:
            return list(self.dropped)
        both: list[ReadingError | DroppedField] = [*self.errors, *self.dropped]
        return sorted(both, key=lambda p: p.index)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


# ---------------------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------------------


def _parties(wrapper: dict[str, Any], outer: Parties, path: str) -> Parties:
    """Ids given on an envelope level; the nearer level wins over the outer one."""
    ids = list(outer)
    for i, names in enumerate(_PARTY_NAMES):
        for name in names:  # the first name present wins, as in the models
            if name in wrapper:
                try:
                    value = to_party_id(wrapper[name])
                except PydanticCustomError as exc:
                    raise MessageError(
                        "invalid_envelope", f"{path}{name}: {exc.message()}"
                    ) from None
                if value is not None:
                    ids[i] = value
                break
    return ids[0], ids[1], ids[2]


def _is_relay(data: dict[str, Any]) -> bool:
    return "data" in data and "deviceSn" not in data and "id" not in data


def _split(obj: object, max_readings: int) -> tuple[list[Any], Parties]:
    """The readings of a message and the ids its envelope(s) give them."""
    if not isinstance(obj, dict):
        raise MessageError("invalid_envelope", f"message is a JSON {json_kind(obj)}, not an object")
    if "data" not in obj:
        if "deviceSn" in obj or "id" in obj:
            return [obj], NO_PARTIES  # a bare reading: its ids are its own
        raise MessageError(
            "invalid_envelope", "message has neither 'data' nor a top-level 'deviceSn'/'id'"
        )
    parties = _parties(obj, NO_PARTIES, "") if len(obj) > 1 else NO_PARTIES
    data = obj["data"]
    path = "data"
    if isinstance(data, dict) and _is_relay(data):
        parties = _parties(data, parties, "data.")
        data = data["data"]
        path = "data.data"
        if isinstance(data, dict) and _is_relay(data):
            raise MessageError(
                "invalid_envelope", "data.data.data: envelopes nest at most one relay deep"
            )
    if isinstance(data, dict):
        return [data], parties
    if isinstance(data, list):
        if not data:
            raise MessageError("empty_envelope", f"{path} is an empty array")
        if len(data) > max_readings:
            raise MessageError(
                "too_many_readings",
                f"{path} has {len(data)} readings, at most {max_readings} allowed",
            )
        return data, parties
    raise MessageError(
        "invalid_envelope", f"{path} must be an object or an array (got {json_kind(data)})"
    )


# ---------------------------------------------------------------------------------------
# Reference path: the pydantic model
# ---------------------------------------------------------------------------------------


def record_from_reading(reading: Reading, parties: Parties = NO_PARTIES) -> HealthRecord:
    """The record of a validated reading; envelope ids fill in the ones it lacks."""
    customer_id, org_id, user_id = parties
    sleep = None if reading.sleep_data is None else sleep_hours(orjson.loads(reading.sleep_data))
    return HealthRecord(
        device_sn=reading.device_sn,
        timestamp=reading.timestamp,
        customer_id=customer_id if reading.customer_id is None else reading.customer_id,
        org_id=org_id if reading.org_id is None else reading.org_id,
        user_id=user_id if reading.user_id is None else reading.user_id,
        heart_rate=reading.heart_rate,
        blood_oxygen=reading.blood_oxygen,
        temperature=reading.body_temperature,
        pressure_high=reading.blood_pressure_systolic,
        pressure_low=reading.blood_pressure_diastolic,
        stress=reading.stress,
        step=reading.step,
        distance=reading.distance,
        calorie=reading.calorie,
        latitude=reading.latitude,
        longitude=reading.longitude,
        altitude=reading.altitude,
        sleep=sleep,
        upload_method=reading.upload_method,
        sleep_data=reading.sleep_data,
        exercise_daily_data=reading.exercise_daily_data,
        exercise_week_data=reading.exercise_week_data,
        scientific_sleep_data=reading.scientific_sleep_data,
        workout_data=reading.workout_data,
    )


def _describe(error: ErrorDetails) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    primary = ALIASES.get(loc, loc)
    name = loc if primary == loc else f"{loc} (alias of {primary})"
    if error["type"] == "missing":
        return f"{name}: missing"
    if "url" not in error:  # our own PydanticCustomError: its message quotes what matters
        return f"{name}: {error['msg']}"
    return f"{name}: {error['msg']} (got {shorten(error['input'])})"


def _reading_error(index: int, exc: ValidationError) -> ReadingError:
    errors = exc.errors()  # pydantic's own error types carry a url, ours do not
    primaries = [ALIASES.get(str(e["loc"][0]) if e["loc"] else "", "") for e in errors]
    if any(
        p == "deviceSn" and e["type"] in ("missing", "device_sn_missing")
        for p, e in zip(primaries, errors, strict=True)
    ):
        reason = "missing_device_sn"
    elif "timestamp" in primaries:
        reason = "invalid_timestamp"
    else:
        reason = "schema_violation"
    return ReadingError(index, reason, _clip("; ".join(_describe(e) for e in errors)))


# Problems in the *content* of a slow field (its type is right): the field is dropped and
# the reading kept. A slow field of the wrong type (a number) still rejects the reading,
# as the JSON Schema does.
_SLOW_CONTENT_ERRORS = frozenset(
    {"slow_field_json", "slow_field_depth", "sleep_timestamp_range", "sleep_range"}
)
_TIMESTAMP_NAMES = tuple(name for name, primary in ALIASES.items() if primary == "timestamp")


def _model_record(
    raw: object, index: int, parties: Parties, dropped: list[DroppedField]
) -> HealthRecord | ReadingError:
    if not isinstance(raw, dict):
        return ReadingError(
            index, "schema_violation", f"reading is a JSON {json_kind(raw)}, not an object"
        )
    try:
        reading = Reading.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if not all(e["type"] in _SLOW_CONTENT_ERRORS for e in errors):
            return _reading_error(index, exc)
        # Only slow fields are at fault: drop every name of each (else an alias sent too
        # would stand in for the bad value) and keep the vital signs.
        primaries = {ALIASES[str(e["loc"][0])] for e in errors}
        kept = {k: v for k, v in raw.items() if ALIASES.get(k) not in primaries}
        try:
            reading = Reading.model_validate(kept)
        except ValidationError as again:  # cannot happen: the other fields were valid
            return _reading_error(index, again)
        dropped.extend(
            DroppedField(index, str(e["loc"][0]), INVALID_SLOW_FIELD, _clip(_describe(e)))
            for e in errors
        )
    return record_from_reading(reading, parties)


def _lacks_timestamp(raw: dict[str, Any]) -> bool:
    """No timestamp under any name: absent, null or blank (blank means "not sent", as
    for every other field). A value that is present but malformed is not missing."""
    for name in _TIMESTAMP_NAMES:
        value = raw.get(name)
        if value is not None and not (type(value) is str and not value.strip()):
            return False
    return True


# ---------------------------------------------------------------------------------------
# Fast path
# ---------------------------------------------------------------------------------------

_PRIMARY_NAMES = frozenset(ALIASES.values())
# What a watch sends in every reading; a reading with only these keys has no ids, slow
# fields or aliases to look at, which saves a dozen look-ups on the hot path.
_COMMON_NAMES = frozenset(
    {
        "deviceSn", "timestamp", "upload_method", "heart_rate", "blood_oxygen",
        "blood_pressure_systolic", "blood_pressure_diastolic", "stress", "step",
        "body_temperature", "distance", "calorie", "latitude", "longitude", "altitude",
    }
)  # fmt: skip
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
    cache (1.3 us more per reading on the benchmark's watch workload, where 30% of the
    readings carry one). When full the cache starts over rather than keeping its first
    values forever, so it follows the values of the moment (today's distances).
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
    """A positional HealthRecord constructor about 2.5x faster than the dataclass one.

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


def _fast_record(raw: dict[str, Any], parties: Parties) -> HealthRecord | None:
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
            known = UPLOAD_METHODS.get(method)
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
        device_sn, timestamp, customer_id, org_id, user_id, heart_rate, blood_oxygen,
        temperature, pressure_high, pressure_low, stress, step, distance, calorie, latitude,
        longitude, altitude, sleep, method, sleep_text, daily, week, scientific, workout,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Watch uploads: one typed parse
# ---------------------------------------------------------------------------------------

# What a watch sends, each key of the one type it sends, ranges as Meta constraints.
_HeartRate = Annotated[int, Meta(ge=0, le=HEART_RATE_MAX)]
_BloodOxygen = Annotated[int, Meta(ge=0, le=BLOOD_OXYGEN_MAX)]
_Pressure = Annotated[int, Meta(ge=0, le=PRESSURE_MAX)]
_Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
_PartyId = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]  # as _party takes an int
# UPLOAD_METHODS' keys (a unit test holds them equal): any other uplink, or another case,
# goes the general way and comes out normalized.
_UploadMethod = Literal["wifi", "bluetooth", "common_event", "esim", "4g"]


class _WatchReading(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """A reading with the keys `_COMMON_NAMES` (primary names only), the ids as JSON
    integers (what a phone relay or an enriching gateway adds), and nothing else.

    In the order watches send them (tests/unit/payloads.py SAMPLE_UPLOAD): msgspec looks
    for each key first where the previous one was found.
    """

    deviceSn: str
    heart_rate: _HeartRate | None = None
    blood_oxygen: _BloodOxygen | None = None
    body_temperature: str | None = None
    step: _Count | None = None
    distance: str | None = None
    calorie: str | None = None
    latitude: str | None = None
    longitude: str | None = None
    altitude: str | None = None
    stress: _Count | None = None
    upload_method: _UploadMethod | None = None
    blood_pressure_systolic: _Pressure | None = None
    blood_pressure_diastolic: _Pressure | None = None
    timestamp: str
    customerId: _PartyId | None = None
    orgId: _PartyId | None = None
    userId: _PartyId | None = None


class _WatchUpload(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`{"data": [reading, ...]}` or `{"data": reading}`, no envelope ids."""

    data: list[_WatchReading] | _WatchReading


_parse_watch_upload = msgspec.json.Decoder(_WatchUpload).decode
# What msgspec raises on anything else (ValidationError is a DecodeError; invalid UTF-8
# in a string is a UnicodeDecodeError).
_NOT_A_WATCH_UPLOAD = (msgspec.DecodeError, UnicodeDecodeError)


def _watch_records(value: bytes, max_readings: int) -> list[HealthRecord] | None:
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
                device_sn, timestamp, r.customerId or None, r.orgId or None,
                r.userId or None, r.heart_rate,
                r.blood_oxygen,
                _TEMPERATURE[r.body_temperature], r.blood_pressure_systolic,
                r.blood_pressure_diastolic, r.stress, r.step, _DISTANCE[r.distance],
                _CALORIE[r.calorie], _LATITUDE[r.latitude], _LONGITUDE[r.longitude],
                _ALTITUDE[r.altitude], None, r.upload_method, None, None, None, None, None,
            )  # fmt: skip
            append(record)
    except (ValueError, _Unsure):
        return None
    return records


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------


def _decode(
    value: bytes,
    max_readings: int,
    max_message_bytes: int,
    fast: bool,
    default_timestamp: datetime | None = None,
) -> DecodedMessage:
    """`fast`: a watch upload in one typed parse, the other readings through _fast_record,
    the model for what they defer; otherwise the model for every reading."""
    # Before parsing: the parsed document takes ~6x the message's size (~29x for tiny
    # objects), and too_many_readings can only be judged after parsing.
    if len(value) > max_message_bytes:
        raise MessageError(
            "message_too_large",
            f"{len(value)} bytes, at most {max_message_bytes} allowed",
        )
    if fast and (watch := _watch_records(value, max_readings)) is not None:
        return DecodedMessage(watch, [], [], 0)
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MessageError("invalid_json", f"not valid JSON: {exc}") from None
    readings, parties = _split(obj, max_readings)
    if default_timestamp is not None and not MIN_TIMESTAMP <= default_timestamp < MAX_TIMESTAMP:
        default_timestamp = None  # no clock at all beats a reading filed under 1970
    records: list[HealthRecord] = []
    errors: list[ReadingError] = []
    dropped: list[DroppedField] = []
    defaulted = 0
    for index, raw in enumerate(readings):
        record = _fast_record(raw, parties) if fast and type(raw) is dict else None
        if record is None:
            # The fast path never defaults: a reading without a time is rare, and the
            # model then judges it like one that carries the default as sent.
            stamped = default_timestamp is not None and type(raw) is dict and _lacks_timestamp(raw)
            if stamped:
                # Distinct readings get distinct times (issue 18, S2): the message time,
                # then one second more for each further reading without a time in it.
                assert default_timestamp is not None
                at = default_timestamp + timedelta(seconds=defaulted)
                raw = {**raw, "timestamp": f"{at:%Y-%m-%d %H:%M:%S}"}
            outcome = _model_record(raw, index, parties, dropped)
            if isinstance(outcome, ReadingError):
                errors.append(outcome)
                continue
            record = outcome
            defaulted += stamped
        records.append(record)
    return DecodedMessage(records, errors, dropped, defaulted)


def _undecodable(exc: Exception) -> MessageError:
    """Last resort for a bug this module does not know of yet: the message goes to the
    dead-letter topic instead of crashing the poll loop on every restart. The tests hold
    every known hostile input to a proper reason, never this one."""
    return MessageError("undecodable", f"{type(exc).__name__}: {exc}")


def decode_message(
    value: bytes,
    *,
    max_readings: int = MAX_READINGS,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    default_timestamp: datetime | None = None,
) -> DecodedMessage:
    """Decode one Kafka message value.

    Raises MessageError when the message as a whole is unusable, and never anything else;
    otherwise each reading is judged on its own, so one bad reading in a cache flush does
    not drop the others. `default_timestamp` (naive device-local time, whole seconds) is
    the time of a reading that carries none; the consumer passes the Kafka message time,
    which keeps replays idempotent. Without it such a reading is an `invalid_timestamp`
    error, which is what a gateway that has no message time yet must report.
    """
    try:
        return _decode(value, max_readings, max_message_bytes, True, default_timestamp)
    except MessageError:
        raise
    except Exception as exc:
        raise _undecodable(exc) from exc


def decode_message_reference(
    value: bytes,
    *,
    max_readings: int = MAX_READINGS,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    default_timestamp: datetime | None = None,
) -> DecodedMessage:
    """`decode_message` through the pydantic models only: same result, several times slower.

    For tests and for debugging a disputed message; production uses `decode_message`.
    """
    try:
        return _decode(value, max_readings, max_message_bytes, False, default_timestamp)
    except MessageError:
        raise
    except Exception as exc:
        raise _undecodable(exc) from exc
