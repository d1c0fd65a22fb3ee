"""Every reason a message (or one of its readings) goes to the dead-letter topic, once.

The `error.reason` header, the `dead_letters_total{reason}` label, `dlq replay --reason`
and the README all speak this vocabulary, so it is one enum: a `StrEnum`, so a member is
the very string on the wire and `schemas.decode` (which must not import the consumer)
keeps its literals, checked against this list by tests/unit/test_reasons.py.
"""

from __future__ import annotations

from enum import StrEnum


class DeadLetterReason(StrEnum):
    # The message as a whole (schemas.decode, before any reading is looked at).
    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    EMPTY_ENVELOPE = "empty_envelope"
    TOO_MANY_READINGS = "too_many_readings"
    MESSAGE_TOO_LARGE = "message_too_large"
    # One reading (schemas.decode): the message keeps its valid readings.
    MISSING_DEVICE_SN = "missing_device_sn"
    INVALID_TIMESTAMP = "invalid_timestamp"
    SCHEMA_VIOLATION = "schema_violation"
    INVALID_SLOW_FIELD = "invalid_slow_field"  # the reading is stored without the field
    # What only the transport knows (pipeline.intake).
    NULL_VALUE = "null_value"
    KEY_MISMATCH = "key_mismatch"
    UNKEYED_MIXED_DEVICES = "unkeyed_mixed_devices"
    FUTURE_TIMESTAMP = "future_timestamp"
    UNDECODABLE = "undecodable"  # the decoder raised something it should not have
    # A sink refused a row (pipeline.flush, after bisection).
    DB_REJECTED = "db_rejected"  # a row fault (sinks.errors.RowFault)
    INTERNAL_ERROR = "internal_error"  # a bug that fails with the row alone: replayable

    @classmethod
    def of(cls, text: str) -> DeadLetterReason:
        """The member named `text`; a reason the decoder invented without adding it here
        becomes `undecodable` rather than crashing the poll thread (the test catches it)."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNDECODABLE
