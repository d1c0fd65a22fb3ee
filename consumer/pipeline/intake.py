"""Intake: a Kafka message -> records, or the reason it belongs in the dead-letter topic.

The contract (envelopes, aliases, types) lives in `schemas`; this step adds what only the
transport knows: the key must name the device of every reading, because the key is what
put those readings on this partition and keeps them in order; and the message time, which
a reading without a timestamp takes (the legacy used the server clock, which made a
replay store the reading again under a new time).
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from consumer.pipeline.batching import DeadLetter, PendingMessage
from consumer.pipeline.reasons import DeadLetterReason as Reason
from consumer.sinks.dlq import MAX_DETAIL_CHARS
from schemas.decode import MAX_MESSAGE_BYTES, MessageError, decode_message
from schemas.record import HealthRecord


class DeviceClock:
    """Kafka epoch ms -> naive device-local time, whole seconds, in DEVICE_TIMEZONE.

    Whole seconds because device times are sent as yyyy-MM-dd HH:mm:ss: the fallback
    time then looks like one a device sent, in the DB key and the Redis hash alike.
    Remembers the last second, since a poll batch's messages mostly share it.
    """

    __slots__ = ("_second", "_time", "_zone")

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        self._second: int | None = None
        self._time: datetime | None = None

    def __call__(self, timestamp_ms: int) -> datetime | None:
        """None when the message has no usable time (librdkafka gives -1 then)."""
        if timestamp_ms <= 0:
            return None
        second = timestamp_ms // 1000
        if second != self._second:
            try:
                local = datetime.fromtimestamp(second, self._zone).replace(tzinfo=None)
            except (OverflowError, OSError, ValueError):
                return None
            self._second, self._time = second, local
        return self._time


def read_message(
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    max_readings: int,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    clock: DeviceClock | None = None,
    future_horizon: timedelta | None = None,
) -> PendingMessage:
    """Total: whatever the bytes, a PendingMessage, carrying a DeadLetter when bad.

    With a `clock`, a reading without a timestamp takes the message's time; without one
    it is an invalid_timestamp error. With a `future_horizon` too, a reading dated more
    than that after its message's time is not stored but dead-lettered
    (`future_timestamp`): one reading dated 2099 would otherwise freeze the device's
    latest state, which only moves forward. Judged against the message time, not the
    clock on the wall, so a replay judges the same way.
    """
    if value is None:
        return _reject(offset, timestamp_ms, key, value, Reason.NULL_VALUE, "no value (tombstone)")
    message_time = None if clock is None else clock(timestamp_ms)
    try:
        decoded = decode_message(
            value,
            max_readings=max_readings,
            max_message_bytes=max_message_bytes,
            default_timestamp=message_time,
        )
    except MessageError as err:
        return _reject(offset, timestamp_ms, key, value, Reason.of(err.reason), err.detail)
    except Exception as err:  # a decoder bug must cost one message, never the partition
        detail = f"{type(err).__name__}: {err}"
        return _reject(offset, timestamp_ms, key, value, Reason.UNDECODABLE, detail)

    records = decoded.records
    unkeyed = not key
    if unkeyed:
        sns = {r.device_sn for r in records}
        if len(sns) > 1:
            detail = f"no key and readings of {len(sns)} devices: " + ", ".join(sorted(sns)[:5])
            return _reject(offset, timestamp_ms, key, value, Reason.UNKEYED_MIXED_DEVICES, detail)
    else:
        mismatch = _key_mismatch(key, records)  # type: ignore[arg-type]
        if mismatch is not None:
            return _reject(offset, timestamp_ms, key, value, Reason.KEY_MISMATCH, mismatch)

    # Rejected readings and dropped fields alike: the message goes to the DLQ once, with
    # the reason of its first problem, while what could be stored is stored.
    dead_letter = None
    problems = decoded.problems()
    if problems:
        detail = "; ".join(f"reading[{p.index}] {p.reason}: {p.detail}" for p in problems)
        counts = []
        if decoded.errors and records:
            total = len(decoded.errors) + len(records)
            counts.append(f"{len(decoded.errors)} of {total} readings invalid")
        if decoded.dropped:
            counts.append(f"{len(decoded.dropped)} field(s) dropped from stored readings")
        if counts:
            detail = f"{', '.join(counts)}: {detail}"
        dead_letter = DeadLetter(Reason.of(problems[0].reason), detail[:MAX_DETAIL_CHARS])
    if future_horizon is not None and message_time is not None:
        latest = message_time + future_horizon
        future = [r for r in records if r.timestamp > latest]
        if future:
            records = [r for r in records if r.timestamp <= latest]
            text = (
                f"{len(future)} reading(s) dated after {latest:%Y-%m-%d %H:%M:%S} (the message "
                f"time + {future_horizon}), first {future[0].timestamp:%Y-%m-%d %H:%M:%S}"
            )
            if dead_letter is None:
                dead_letter = DeadLetter(Reason.FUTURE_TIMESTAMP, text[:MAX_DETAIL_CHARS])
            else:
                detail = f"{dead_letter.detail}; {text}"
                dead_letter = DeadLetter(dead_letter.reason, detail[:MAX_DETAIL_CHARS])
    return PendingMessage(
        offset,
        timestamp_ms,
        key,
        value,
        records,
        dead_letter,
        unkeyed,
        decoded.timestamps_defaulted,
    )


def _key_mismatch(key: bytes, records: list[HealthRecord]) -> str | None:
    key_sn = key.decode("utf-8", errors="replace")
    for record in records:
        if record.device_sn != key_sn:
            wrong = sorted({r.device_sn for r in records} - {key_sn})
            return f"key {key_sn!r} does not match deviceSn {', '.join(wrong[:5])}"
    return None


def _reject(
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    reason: Reason,
    detail: str,
) -> PendingMessage:
    return PendingMessage(offset, timestamp_ms, key, value, [], DeadLetter(reason, detail))
