"""The pydantic models of the wire format that watches and gateways send (schema v1).

These models are the contract, and `Reading` is its one field table: the wire names of
each field (`ALIASES`), its type, range and description. From it come the published JSON
Schema (`schemas.export`), the record each field fills (`RECORD_ATTRS`,
`record_from_reading`) and the names the typed fast path reads (`schemas.fast`). What a
value may be is `schemas.clean`; how the schema spells it, `schemas.jsonschema`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    WithJsonSchema,
)

from schemas.clean import (
    ALTITUDE_MAX,
    AMOUNT_MAX,
    AMOUNT_MIN,
    BLOOD_OXYGEN_MAX,
    HEART_RATE_MAX,
    INT32_MAX,
    LATITUDE_MAX,
    LONGITUDE_MAX,
    PRESSURE_MAX,
    SLOW_FIELD_DEPTH_MAX,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
    cents,
    decimal_input,
    int_input,
    micros,
    normalize_device_sn,
    normalize_upload_method,
    parse_timestamp,
    sleep_field,
    sleep_hours,
    slow_field,
    to_party_id,
)
from schemas.jsonschema import (
    DEVICE_SN_SCHEMA,
    PARTY_ID_SCHEMA,
    SLOW_SCHEMA,
    TIMESTAMP_SCHEMA,
    UPLOAD_METHOD_SCHEMA,
    decimal_schema,
    document_aliases,
    int_schema,
)
from schemas.record import HealthRecord

__all__ = [
    "ALIASES",
    "RECORD_ATTRS",
    "Envelope",
    "HealthDataMessage",
    "Parties",
    "Reading",
    "RelayEnvelope",
    "record_from_reading",
]


def _int(high: int) -> Any:
    return (
        Annotated[Annotated[int, Field(ge=0, le=high)] | None, BeforeValidator(int_input)],
        WithJsonSchema(int_schema(high)),
    )


HeartRate = Annotated[
    Annotated[int, Field(ge=0, le=HEART_RATE_MAX)] | None,
    BeforeValidator(int_input),
    WithJsonSchema(int_schema(HEART_RATE_MAX)),
]
BloodOxygen = Annotated[
    Annotated[int, Field(ge=0, le=BLOOD_OXYGEN_MAX)] | None,
    BeforeValidator(int_input),
    WithJsonSchema(int_schema(BLOOD_OXYGEN_MAX)),
]
Pressure = Annotated[
    Annotated[int, Field(ge=0, le=PRESSURE_MAX)] | None,
    BeforeValidator(int_input),
    WithJsonSchema(int_schema(PRESSURE_MAX)),
]
Count = Annotated[
    Annotated[int, Field(ge=0, le=INT32_MAX)] | None,
    BeforeValidator(int_input),
    WithJsonSchema(int_schema(INT32_MAX)),
]
Temperature = Annotated[
    Annotated[Decimal, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)] | None,
    BeforeValidator(decimal_input),
    AfterValidator(cents),
    WithJsonSchema(decimal_schema(TEMPERATURE_MIN, TEMPERATURE_MAX)),
]
Amount = Annotated[
    Annotated[Decimal, Field(ge=AMOUNT_MIN, le=AMOUNT_MAX)] | None,
    BeforeValidator(decimal_input),
    AfterValidator(cents),
    WithJsonSchema(decimal_schema(AMOUNT_MIN, AMOUNT_MAX)),
]
Latitude = Annotated[
    Annotated[Decimal, Field(ge=-LATITUDE_MAX, le=LATITUDE_MAX)] | None,
    BeforeValidator(decimal_input),
    AfterValidator(micros),
    WithJsonSchema(decimal_schema(-LATITUDE_MAX, LATITUDE_MAX)),
]
Longitude = Annotated[
    Annotated[Decimal, Field(ge=-LONGITUDE_MAX, le=LONGITUDE_MAX)] | None,
    BeforeValidator(decimal_input),
    AfterValidator(micros),
    WithJsonSchema(decimal_schema(-LONGITUDE_MAX, LONGITUDE_MAX)),
]
Altitude = Annotated[
    Annotated[Decimal, Field(ge=-ALTITUDE_MAX, le=ALTITUDE_MAX)] | None,
    BeforeValidator(decimal_input),
    AfterValidator(cents),
    WithJsonSchema(decimal_schema(-ALTITUDE_MAX, ALTITUDE_MAX)),
]
DeviceSn = Annotated[str, PlainValidator(normalize_device_sn), WithJsonSchema(DEVICE_SN_SCHEMA)]
Timestamp = Annotated[datetime, PlainValidator(parse_timestamp), WithJsonSchema(TIMESTAMP_SCHEMA)]
PartyId = Annotated[int | None, PlainValidator(to_party_id), WithJsonSchema(PARTY_ID_SCHEMA)]
UploadMethod = Annotated[
    str | None, PlainValidator(normalize_upload_method), WithJsonSchema(UPLOAD_METHOD_SCHEMA)
]
SlowField = Annotated[str | None, PlainValidator(slow_field), WithJsonSchema(SLOW_SCHEMA)]


def _sleep_text(value: object) -> str | None:
    return sleep_field(value)[0]


SleepField = Annotated[str | None, PlainValidator(_sleep_text), WithJsonSchema(SLOW_SCHEMA)]


def _field(*names: str, description: str, required: bool = False) -> Any:
    """A field read from any of `names` (the first one present wins)."""
    return Field(
        ... if required else None,
        validation_alias=AliasChoices(*names),
        description=description,
    )


_NOT_MEASURED = " 0 means not measured."
_DEPTH_NOTE = f" Arrays/objects nest at most {SLOW_FIELD_DEPTH_MAX} levels deep."


class Reading(BaseModel):
    """One reading of one watch. Unknown fields are ignored; when a field is sent under
    several of its names, the first name listed in this schema wins."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, title="Reading", json_schema_extra=document_aliases
    )

    device_sn: DeviceSn = _field(
        "deviceSn",
        "id",
        required=True,
        description="Device serial number (also the Kafka key). Numbers are taken as text; "
        "surrounding whitespace is stripped.",
    )
    heart_rate: HeartRate = _field(
        "heart_rate",
        "heartRate",
        "xlv",
        description="Heart rate, bpm (0..300)." + _NOT_MEASURED,
    )
    blood_oxygen: BloodOxygen = _field(
        "blood_oxygen", "bloodOxygen", "xy", description="SpO2, % (0..100)." + _NOT_MEASURED
    )
    body_temperature: Temperature = _field(
        "body_temperature",
        "temperature",
        "tw",
        description='Body temperature, degrees C, sent as "%.1f" text (0..50).' + _NOT_MEASURED,
    )
    blood_pressure_systolic: Pressure = _field(
        "blood_pressure_systolic",
        "pressureHigh",
        "gxy",
        description="Systolic pressure, mmHg (0..300)." + _NOT_MEASURED,
    )
    blood_pressure_diastolic: Pressure = _field(
        "blood_pressure_diastolic",
        "pressureLow",
        "dxy",
        description="Diastolic pressure, mmHg (0..300)." + _NOT_MEASURED,
    )
    step: Count = _field("step", "bs", description="Steps today.")
    distance: Amount = _field("distance", "jl", description='Distance today, sent as "%.1f" text.')
    calorie: Amount = _field("calorie", "rl", description='Calories today, sent as "%.1f" text.')
    stress: Count = _field("stress", "yl", description="Stress index." + _NOT_MEASURED)
    latitude: Latitude = _field(
        "latitude", "wd", description='Latitude, degrees, as text ("0" when unknown).'
    )
    longitude: Longitude = _field(
        "longitude", "jd", description='Longitude, degrees, as text ("0" when unknown).'
    )
    altitude: Altitude = _field(
        "altitude", "hb", description='Altitude, metres, as text ("0" when unknown).'
    )
    upload_method: UploadMethod = _field(
        "upload_method",
        "uploadMethod",
        description="Uplink: wifi, bluetooth, common_event, esim, 4g (old firmware's name "
        "of esim). Any string is accepted, kept trimmed, lower-cased and cut to 32 "
        "characters.",
    )
    timestamp: Timestamp = _field(
        "timestamp",
        "cjsj",
        required=True,
        description="Measurement time, device local time, yyyy-MM-dd HH:mm:ss, years 2000..2100. "
        "Required: the consumer stores a reading without it at the Kafka message time "
        "(DEVICE_TIMEZONE), a legacy tolerance, not part of the contract.",
    )
    customer_id: PartyId = _field(
        "customerId",
        "customer_id",
        description="Customer id; overrides the envelope's. 0 and blank mean unknown.",
    )
    org_id: PartyId = _field(
        "orgId", "org_id", description="Organisation id; overrides the envelope's."
    )
    user_id: PartyId = _field("userId", "user_id", description="User id; overrides the envelope's.")
    sleep_data: SleepField = _field(
        "sleepData",
        "smData",
        description='JSON-encoded sleep history ("null" when none); its data[] intervals '
        "(startTimeStamp/endTimeStamp, ms, within 64 bits) give the sleep hours." + _DEPTH_NOTE,
    )
    exercise_daily_data: SlowField = _field(
        "exerciseDailyData",
        "ydData",
        description="JSON-encoded daily exercise summary." + _DEPTH_NOTE,
    )
    exercise_week_data: SlowField = _field(
        "exerciseWeekData",
        "exerciseDailyWeekData",
        "ydWeekData",
        description="JSON-encoded weekly exercise summary." + _DEPTH_NOTE,
    )
    scientific_sleep_data: SlowField = _field(
        "scientificSleepData",
        "kxsmData",
        description="JSON-encoded scientific sleep analysis." + _DEPTH_NOTE,
    )
    workout_data: SlowField = _field(
        "workoutData", description="JSON-encoded workout records." + _DEPTH_NOTE
    )


_PARTY_NOTE = (
    " Applies to every reading that does not carry its own. 0 and blank mean unknown:"
    " the device binding fills them."
)


class RelayEnvelope(BaseModel):
    """What a Bluetooth relay wraps a watch's envelope in: `{"data": {"data": ...}}`."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, title="RelayEnvelope", json_schema_extra=document_aliases
    )

    data: Reading | Annotated[list[Reading], Field(min_length=1)] = Field(
        description="One reading, or a non-empty array of readings."
    )
    customer_id: PartyId = _field(
        "customerId", "customer_id", description="Customer id." + _PARTY_NOTE
    )
    org_id: PartyId = _field("orgId", "org_id", description="Organisation id." + _PARTY_NOTE)
    user_id: PartyId = _field("userId", "user_id", description="User id." + _PARTY_NOTE)


class Envelope(BaseModel):
    """`{"data": reading}`, `{"data": [readings]}` (a watch flushing its cache) or a relay's
    `{"data": {"data": ...}}`."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, title="Envelope", json_schema_extra=document_aliases
    )

    data: Reading | Annotated[list[Reading], Field(min_length=1)] | RelayEnvelope = Field(
        description="One reading, a non-empty array of readings (at most 1000 by default), "
        "or a relay envelope."
    )
    customer_id: PartyId = _field(
        "customerId", "customer_id", description="Customer id." + _PARTY_NOTE
    )
    org_id: PartyId = _field("orgId", "org_id", description="Organisation id." + _PARTY_NOTE)
    user_id: PartyId = _field("userId", "user_id", description="User id." + _PARTY_NOTE)


class HealthDataMessage(RootModel[Envelope | Reading]):
    """A Kafka message value on the health-data topic (UTF-8 JSON, at most 1 MiB by default),
    keyed by deviceSn: an envelope, or a bare reading (deviceSn/id at top level and no
    "data")."""

    model_config = ConfigDict(title="HealthDataMessage")


def _aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for info in Reading.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names = [n for n in info.validation_alias.choices if isinstance(n, str)]
            aliases.update(dict.fromkeys(names, names[0]))
    return aliases


# Every accepted wire name of a reading field -> its primary name (the first alias).
ALIASES: dict[str, str] = _aliases()


# Reading attribute -> the HealthRecord attribute it fills, where the names differ (the
# record's names are the legacy DB columns). `sleep` is derived from sleep_data.
_RENAMED = {
    "body_temperature": "temperature",
    "blood_pressure_systolic": "pressure_high",
    "blood_pressure_diastolic": "pressure_low",
}
RECORD_ATTRS: dict[str, str] = {name: _RENAMED.get(name, name) for name in Reading.model_fields}

# (customer_id, org_id, user_id) set on the envelope, for readings that carry none.
Parties = tuple[int | None, int | None, int | None]
NO_PARTIES: Parties = (None, None, None)
_PARTY_ATTRS = ("customer_id", "org_id", "user_id")


def record_from_reading(reading: Reading, parties: Parties = NO_PARTIES) -> HealthRecord:
    """The record of a validated reading; envelope ids fill in the ones it lacks."""
    values: dict[str, Any] = {RECORD_ATTRS[name]: getattr(reading, name) for name in RECORD_ATTRS}
    for attr, outer in zip(_PARTY_ATTRS, parties, strict=True):
        if values[attr] is None:
            values[attr] = outer
    sleep = reading.sleep_data
    values["sleep"] = None if sleep is None else sleep_hours(orjson.loads(sleep))
    return HealthRecord(**values)
