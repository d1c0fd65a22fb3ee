"""Dead-letter producer: the original key and value, plus headers saying why.

A dead letter counts as handled (its offset may be committed) only once the broker has
acknowledged it, so the worker holds a `Delivery` per message and waits on it before
committing. One producer serves the whole replica; a small thread serves its callbacks.

Every letter fits: one that would exceed the producer's `message.max.bytes` (which the
start-up check keeps below the broker's and the DLQ topic's limits) is truncated, with its
original sizes and sha256 digests in `original.*` headers so `dlq replay` can refuse it.
A letter the broker still refuses as too large is cut to half its size on each resend, down
to headers only, so no input can crash the worker or be resent forever.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer import __version__
from consumer.sinks.base import (
    ORDER_DEAD_LETTERS,
    Abandoned,
    Policy,
    SinkBase,
    SinkBatch,
    SinkContext,
    SinkResult,
)
from consumer.sinks.errors import Retryable

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 1000
# librdkafka's default `message.max.bytes`; the DLQ producer's limit unless overridden.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
# Record-batch framing (61 bytes) and one record's varints, rounded up generously.
FRAMING_BYTES = 512
HEADER_OVERHEAD_BYTES = 10  # varint lengths per header
TRUNCATED_KEY_BYTES = 1024  # a truncated letter keeps this much of an oversized key

TRUNCATED_HEADER = "dlq.truncated"
# The original message's Kafka time (epoch ms): replay sends the copy with it (issue 18, R1).
SOURCE_TIMESTAMP_HEADER = "source.timestamp"
ORIGINAL_KEY_BYTES = "original.key.bytes"
ORIGINAL_KEY_SHA256 = "original.key.sha256"
ORIGINAL_VALUE_BYTES = "original.value.bytes"
ORIGINAL_VALUE_SHA256 = "original.value.sha256"
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})

Headers = list[tuple[str, str | bytes | None]]


@dataclass(slots=True)
class Delivery:
    """One dead letter and the broker's answer; `error` is None once acknowledged."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    code: int | None = None  # KafkaError code of `error`
    # What was asked to be sent, before any truncation (kept for a smaller resend).
    original_key: bytes | None = None
    original_value: bytes | None = None
    base_headers: Headers | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Message | None) -> None:
        self.error = None if err is None else str(err)
        self.code = None if err is None else err.code()
        self.done.set()

    def fail(self, err: KafkaError) -> Delivery:
        """Answer at once with a produce-time error; the flush resends it after a backoff."""
        self.on_delivery(err, None)
        return self

    @property
    def truncated(self) -> bool:
        return any(name == TRUNCATED_HEADER for name, _ in self.headers)

    def size(self) -> int:
        return letter_size(self.key, self.value, self.headers)


def letter_headers(
    reason: str,
    detail: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    source_timestamp_ms: int | None = None,
) -> Headers:
    """The headers saying why and from where; the start-up limit check sizes them too."""
    headers: Headers = [
        ("error.reason", reason.encode()),
        ("error.detail", detail[:MAX_DETAIL_CHARS].encode()),
        ("source.topic", source_topic.encode()),
        ("source.partition", str(source_partition).encode()),
        ("source.offset", str(source_offset).encode()),
        ("consumer.version", __version__.encode()),
    ]
    if source_timestamp_ms is not None and source_timestamp_ms > 0:
        headers.append((SOURCE_TIMESTAMP_HEADER, str(source_timestamp_ms).encode()))
    return headers


def letter_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Upper bound of the bytes a letter takes on the wire, framing included."""
    head = sum(len(n) + len(v or b"") + HEADER_OVERHEAD_BYTES for n, v in headers)
    return FRAMING_BYTES + len(key or b"") + len(value or b"") + head


def fit(key: bytes | None, value: bytes | None, headers: Headers, limit: int) -> Delivery:
    """The letter as sent within `limit` bytes: unchanged when it fits, else truncated with
    the original sizes and digests in headers (the key is cut only when it alone is big)."""
    if letter_size(key, value, headers) <= limit:
        return Delivery(
            key, value, headers, original_key=key, original_value=value, base_headers=headers
        )
    marks: Headers = [
        (TRUNCATED_HEADER, b"true"),
        (ORIGINAL_KEY_BYTES, str(len(key or b"")).encode()),
        (ORIGINAL_KEY_SHA256, hashlib.sha256(key or b"").hexdigest().encode()),
        (ORIGINAL_VALUE_BYTES, str(len(value or b"")).encode()),
        (ORIGINAL_VALUE_SHA256, hashlib.sha256(value or b"").hexdigest().encode()),
    ]
    sent_headers = headers + marks
    room = max(0, limit - letter_size(None, None, sent_headers))
    cut_key = (
        key
        if key is None or len(key) <= min(room, TRUNCATED_KEY_BYTES)
        else (key[: min(room, TRUNCATED_KEY_BYTES)])
    )
    room -= len(cut_key or b"")
    cut_value = value if value is None else value[:room]
    return Delivery(
        cut_key,
        cut_value,
        sent_headers,
        original_key=key,
        original_value=value,
        base_headers=headers,
    )


def producer_max_bytes(client_props: dict[str, str]) -> int:
    """The DLQ producer's `message.max.bytes` (KAFKA_CLIENT_MESSAGE_MAX_BYTES or default)."""
    return int(client_props.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))


def dlq_producer_config(
    bootstrap_servers: str, client_props: dict[str, str], delivery_timeout_s: float
) -> dict[str, object]:
    """The pass-through properties, then what the no-loss promise rests on (acks from every
    in-sync replica, idempotence); settings refuse KAFKA_CLIENT_* values that weaken them."""
    max_bytes = producer_max_bytes(client_props)
    return {
        "bootstrap.servers": bootstrap_servers,
        "linger.ms": 5,
        "compression.type": "lz4",
        "client.id": "healthstream-dlq",
        # A failed delivery comes back after this long and is resent by the flush.
        "message.timeout.ms": int(delivery_timeout_s * 1000),
        **client_props,
        # A batch of letters never exceeds what one letter may take (the broker checks both).
        "batch.size": min(max_bytes, int(client_props.get("batch.size", max_bytes))),
        "enable.idempotence": True,
        "acks": "all",
    }


class DeadLetterSink(SinkBase):
    """Required: a dead letter counts as handled only once the broker acknowledged it."""

    name = "dlq"
    dependency = "kafka"
    policy = Policy.REQUIRED
    order = ORDER_DEAD_LETTERS

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        client_props: dict[str, str],
        delivery_timeout_s: float = 30.0,
    ) -> None:
        self._conf = dlq_producer_config(bootstrap_servers, client_props, delivery_timeout_s)
        self.topic = topic
        self.max_bytes = producer_max_bytes(client_props)
        self.truncated = 0  # letters cut to fit, for the log and tests
        self._producer = Producer(self._conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dlq-producer", daemon=True)
        self._thread.start()

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        source_timestamp_ms: int | None = None,
        carried: Sequence[tuple[str, str | bytes | None]] = (),
    ) -> Delivery:
        """`carried`: headers of the message kept on its dead letter (a replayed copy's
        `replay.*`, so `dlq replay` knows the replay failed again)."""
        headers = letter_headers(
            reason, detail, source_topic, source_partition, source_offset, source_timestamp_ms
        )
        headers.extend(carried)
        return self._produce(fit(key, value, headers, self.max_bytes))

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        """Send the batch's letters not yet acknowledged and wait for the broker's answers;
        a failed delivery raises `Retryable` and is resent on the flush's next attempt."""
        for letter in batch.letters:
            sent: Delivery | None = letter.delivery
            if sent is None:
                m = letter.message
                letter.delivery = self.send(
                    key=m.key,
                    value=m.value,
                    reason=letter.reason,
                    detail=letter.detail,
                    source_topic=batch.source_topic,
                    source_partition=batch.partition,
                    source_offset=m.offset,
                    source_timestamp_ms=m.timestamp_ms,
                    carried=m.carried,
                )
            elif sent.error is not None:
                letter.delivery = self.resend(sent)
        for letter in batch.letters:
            while not letter.delivery.done.wait(0.2):
                if batch.cancel.is_set():
                    raise Abandoned
        failed = [letter.delivery for letter in batch.letters if letter.delivery.error]
        if failed:
            raise Retryable(f"{len(failed)} dead letters not delivered: {failed[0].error}")
        return SinkResult()  # letters are counted by reason, not as readings written

    def stats(self) -> dict[str, int]:
        return {"truncated": self.truncated}

    def resend(self, failed: Delivery) -> Delivery:
        """Send again; a letter refused as too large comes back at half its size."""
        key = failed.original_key if failed.base_headers is not None else failed.key
        value = failed.original_value if failed.base_headers is not None else failed.value
        headers = failed.base_headers if failed.base_headers is not None else failed.headers
        limit = self.max_bytes
        if failed.code in _TOO_LARGE:
            limit = min(limit, failed.size() // 2)
        return self._produce(fit(key, value, headers, limit))

    def _produce(self, delivery: Delivery) -> Delivery:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=delivery.key,
                    value=delivery.value,
                    headers=delivery.headers,
                    on_delivery=delivery.on_delivery,
                )
            except BufferError:  # local queue full: let callbacks drain it, then retry
                time.sleep(0.05)
                continue
            except KafkaException as exc:  # one letter's fault must not kill the worker
                err: KafkaError = exc.args[0]
                if err.code() in _TOO_LARGE and (delivery.key or delivery.value):
                    delivery = self._shrunk(delivery, delivery.size() // 2)
                    continue
                if err.fatal():
                    self._replace_producer(err)
                log.warning("dead letter refused by the producer: %s", err)
                return delivery.fail(err)
            if delivery.truncated:
                self.truncated += 1
                log.warning(
                    "dead letter truncated to fit the DLQ size limit; replay will refuse it",
                    extra={
                        "limit_bytes": self.max_bytes,
                        "sent_bytes": delivery.size(),
                        "original_value_bytes": len(delivery.original_value or b""),
                    },
                )
            return delivery

    def _shrunk(self, delivery: Delivery, limit: int) -> Delivery:
        headers = delivery.base_headers if delivery.base_headers is not None else delivery.headers
        return fit(delivery.original_key, delivery.original_value, headers, limit)

    def _replace_producer(self, err: KafkaError) -> None:
        """A fatal producer error (e.g. idempotence state lost) makes it unusable for good."""
        log.error("dead-letter producer failed fatally; starting a new one: %s", err)
        self._producer = Producer(self._conf)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)


def build_sink(context: SinkContext) -> DeadLetterSink:
    s = context.settings
    return DeadLetterSink(
        s.kafka_bootstrap_servers, s.dlq_topic, s.kafka_client, s.dlq_delivery_timeout_s
    )
