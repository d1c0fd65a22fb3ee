"""What a partition worker holds between flushes, and when it must flush (pure logic).

A batch is a contiguous run of one partition's offsets, so committing `next_offset`
after the batch is durable covers exactly the messages in it and nothing beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.pipeline.reasons import DeadLetterReason
from schemas.record import HealthRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message (or some of its readings) cannot be stored."""

    reason: DeadLetterReason
    detail: str


@dataclass(slots=True)
class PendingMessage:
    """One consumed Kafka message and what decoding made of it."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    records: list[HealthRecord]
    dead_letter: DeadLetter | None = None
    unkeyed: bool = False
    timestamps_from_kafka: int = 0  # readings stored at the message time (they had none)
    # Headers kept for its dead letter: a replayed copy's `replay.*` (issue 18, R2).
    carried: tuple[tuple[str, bytes], ...] = ()

    @property
    def weight(self) -> int:
        """Its share of a worker's bounded queue: its records, and at least 1."""
        return len(self.records) or 1

    @property
    def nbytes(self) -> int:
        """Its share of a worker's bounded bytes: the message as consumed (its decoded
        records are about as large again; the bounds are set with that in mind)."""
        return len(self.value or b"") + len(self.key or b"")


@dataclass(slots=True)
class Batch:
    """Messages of one partition, in offset order, awaiting one flush."""

    partition: int
    opened_at: float = 0.0
    messages: list[PendingMessage] = field(default_factory=list)
    record_count: int = 0
    byte_count: int = 0

    def add(self, message: PendingMessage, now: float) -> None:
        if self.messages and message.offset <= self.messages[-1].offset:
            raise ValueError(
                f"offsets must increase within partition {self.partition}: "
                f"{message.offset} after {self.messages[-1].offset}"
            )
        if not self.messages:
            self.opened_at = now
        self.messages.append(message)
        self.record_count += len(message.records)
        self.byte_count += message.nbytes

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def next_offset(self) -> int:
        """The offset to commit once this batch is durable."""
        if not self.messages:
            raise ValueError("an empty batch has no offset to commit")
        return self.messages[-1].offset + 1


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Flush on size (records or bytes) or on the age of the oldest message, whichever
    comes first.

    Eager (group commit): also flush as soon as the worker has drained its inbox, once the
    batch is `min_wait_s` old. A worker runs one flush at a time, so while a flush is in
    progress the inbox fills and the next batch is large: small batches and low latency
    at low load, big ones at high load. `min_wait_s` bounds how often each partition
    flushes when readings trickle in: a flush costs a DB and a Redis round trip whatever
    its size, and a replica owns many partitions.
    """

    max_records: int
    max_wait_s: float
    eager: bool = False
    min_wait_s: float = 0.0
    max_bytes: int = 4 << 20  # messages as consumed; one larger message is a batch alone

    def full(self, batch: Batch) -> bool:
        """No further message may join: records or bytes reached their bound."""
        return batch.record_count >= self.max_records or batch.byte_count >= self.max_bytes

    def should_flush(self, batch: Batch, now: float, drained: bool = False) -> bool:
        if not batch.messages:
            return False
        if self.full(batch):
            return True
        age = now - batch.opened_at
        if self.eager and drained and age >= self.min_wait_s:
            return True
        return age >= self.max_wait_s

    def seconds_until_due(self, batch: Batch, now: float) -> float | None:
        """How long a drained worker may sleep before the batch must flush."""
        if not batch.messages:
            return None
        limit = min(self.min_wait_s, self.max_wait_s) if self.eager else self.max_wait_s
        return max(0.0, batch.opened_at + limit - now)
