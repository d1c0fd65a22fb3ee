"""Dead-letter producer: the original key and value, plus headers saying why.

A dead letter counts as handled (its offset may be committed) only once the broker has
acknowledged it, so the worker holds a `Delivery` per message and waits on it before
committing. One producer serves the whole replica; a small thread serves its callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from consumer import __version__

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 1000


@dataclass(slots=True)
class Delivery:
    """One dead letter and the broker's answer; `error` is None once acknowledged."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self.error = None if err is None else str(err)
        self.done.set()


class DeadLetterSink:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        client_props: dict[str, str],
        delivery_timeout_s: float = 30.0,
    ) -> None:
        conf: dict[str, object] = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "client.id": "healthstream-dlq",
            # A failed delivery comes back after this long and is resent by the flush.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            **client_props,
        }
        self.topic = topic
        self._producer = Producer(conf)
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
    ) -> Delivery:
        headers: list[tuple[str, str | bytes | None]] = [
            ("error.reason", reason.encode()),
            ("error.detail", detail[:MAX_DETAIL_CHARS].encode()),
            ("source.topic", source_topic.encode()),
            ("source.partition", str(source_partition).encode()),
            ("source.offset", str(source_offset).encode()),
            ("consumer.version", __version__.encode()),
        ]
        return self._produce(Delivery(key, value, headers))

    def resend(self, failed: Delivery) -> Delivery:
        return self._produce(Delivery(failed.key, failed.value, failed.headers))

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
                return delivery
            except BufferError:  # local queue full: let callbacks drain it, then retry
                time.sleep(0.05)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)
