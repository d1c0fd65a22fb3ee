"""Kafka message value (bytes) -> HealthRecords, plus what was wrong with the rest.

Two paths with one meaning: the typed fast path (`schemas.fast`) for what real watches
send, and the pydantic `Reading` model (`schemas.reading`) for whatever the fast path is
not sure of; the model is the contract and also writes the error messages. The typed
parse gives the whole message to the dict path, which gives a reading to the model.
`decode_message_reference` runs only the model; the unit tests check that both agree.
The envelope walk is `schemas.envelope`, shared with the gateway.

Two kinds of problem, both dead-letter the message once (intake): a `ReadingError` loses
the reading; a `DroppedField` (a slow field whose content is unusable) loses only that
field, because the legacy upload path kept the vital signs of such a reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import AliasChoices, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from schemas.clean import MAX_TIMESTAMP, MIN_TIMESTAMP, json_kind, shorten, to_party_id
from schemas.envelope import EnvelopeError, walk
from schemas.fast import fast_record, watch_records
from schemas.reading import (
    ALIASES,
    NO_PARTIES,
    Envelope,
    Parties,
    Reading,
    record_from_reading,
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

# The wire names of the envelope's ids, each tuple in the models' order of precedence.
_PARTY_NAMES = tuple(
    tuple(str(n) for n in info.validation_alias.choices)
    for name, info in Envelope.model_fields.items()
    if name != "data" and isinstance(info.validation_alias, AliasChoices)
)


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


def _split(obj: object, max_readings: int) -> tuple[list[Any], Parties]:
    """The readings of a message and the ids its envelope(s) give them."""
    try:
        readings, outer, relay, path = walk(obj)
    except EnvelopeError as exc:
        raise MessageError(exc.reason, exc.detail) from None
    if len(readings) > max_readings:
        raise MessageError(
            "too_many_readings",
            f"{path} has {len(readings)} readings, at most {max_readings} allowed",
        )
    parties = NO_PARTIES  # a bare reading: its ids are its own
    if outer is not None and len(outer) > 1:
        parties = _parties(outer, parties, "")
    if relay is not None:
        parties = _parties(relay, parties, "data.")
    return readings, parties


# ---------------------------------------------------------------------------------------
# Reference path: the pydantic model
# ---------------------------------------------------------------------------------------


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
    if fast and (watch := watch_records(value, max_readings)) is not None:
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
        record = fast_record(raw, parties) if fast and type(raw) is dict else None
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
