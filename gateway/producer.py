"""The Kafka side of an upload: produce, then wait for the broker's acks, from asyncio.

A 200 must mean durable in Kafka, so every record is produced with `acks=all` by an
idempotent producer (no duplicates or reordering from broker retries) and the request
waits for its delivery report. librdkafka serves delivery reports in whichever thread
calls `poll()`; the event loop itself calls `poll(0)` (never blocking) every millisecond
while records are outstanding and every 100 ms otherwise, so a report answers its upload
directly: no thread hand-off, no GIL contention, no future per upload (issue 19: a poll
thread plus call_soon_threadsafe cost more CPU per upload than the upload's own work).

Kafka is known to be down when a metadata request fails (checked every
GATEWAY_KAFKA_CHECK_INTERVAL_S) or librdkafka reports all brokers down; new uploads are
then refused at once (503) instead of waiting for the delivery timeout. Uploads already
queued keep waiting: they are delivered when the broker is back within the timeout, or
answered 503 when it expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from gateway.limits import read_topic_max_bytes, record_limit
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.split import DeviceMessage
from schemas.publish import producer_config

log = logging.getLogger("gateway.producer")

BUSY_POLL_S = 0.001  # while records are outstanding: adds at most 1 ms to an answer
IDLE_POLL_S = 0.1  # otherwise (error callbacks are served by poll() too)


class Unavailable(Exception):
    """Kafka cannot take this upload now: answered 503 with Retry-After."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # kafka_down | queue_full | delivery_failed | fatal
        self.detail = detail


def gateway_producer_config(settings: GatewaySettings) -> dict[str, Any]:
    """librdkafka settings: the contract's defaults (murmur2, idempotent, acks=all) plus the
    gateway's bounds on how long and how much it may hold."""
    return producer_config(
        settings.kafka_bootstrap_servers,
        **{
            # Bytes as well as messages: 64 MiB of queued records at most (503 queue_full
            # beyond), so a Kafka stall with large uploads cannot grow a pod past its limit.
            "queue.buffering.max.kbytes": 65536,
            **settings.kafka_client,
            "linger.ms": settings.linger_ms,
            "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
            "queue.buffering.max.messages": settings.queue_max_messages,
            "client.id": "health-gateway",
        },
    )


class GatewayProducer:
    """One confluent-kafka Producer per worker process, shared by all its requests."""

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        factory: Callable[[dict[str, Any]], Any] = Producer,
        topic_max_reader: Callable[[], int | None] | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._topic = settings.kafka_topic
        config = gateway_producer_config(settings)
        config["error_cb"] = self._on_error
        self._producer = factory(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kafka_up = False
        self._fatal: str | None = None
        self._checked_at = 0.0
        self._poll_handle: asyncio.TimerHandle | None = None
        self._busy = False
        self.outstanding = 0  # records produced and not yet reported
        self._read_topic_max = topic_max_reader or functools.partial(read_topic_max_bytes, settings)
        self._topic_max_known = False
        self._set_limit(None)

    # --- state ---------------------------------------------------------------------------

    @property
    def kafka_up(self) -> bool:
        return self._kafka_up and self._fatal is None

    @property
    def fatal(self) -> str | None:
        """A fatal producer error: this worker can never produce again (see /livez)."""
        return self._fatal

    def stalled(self) -> str | None:
        """Why this worker can no longer answer uploads, if a thread of ours died."""
        dead = [t.name for t in self._threads if not t.is_alive()]
        return f"thread {', '.join(dead)} stopped" if dead and not self._stop.is_set() else None

    def _set_up(self, up: bool, why: str = "") -> None:
        if up != self._kafka_up:
            if up:
                log.info("kafka reachable", extra={"topic": self._topic})
            else:
                log.warning("kafka unreachable: refusing uploads", extra={"error": why})
        self._kafka_up = up
        self._metrics.kafka_up.set(1 if up and self._fatal is None else 0)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (called from poll(), so in the poll thread)."""
        if err.fatal():
            self._fatal = err.str()
            self._metrics.kafka_up.set(0)
            log.critical("fatal producer error: restart this worker", extra={"error": err.str()})
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set_up(False, err.str())
        else:
            log.debug("producer error", extra={"error": err.str()})

    def _set_limit(self, topic_max: int | None) -> None:
        limit = record_limit(self._settings, topic_max)
        self.record_limit = limit.max_bytes
        self.limit_source = limit.source

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.check_kafka()
        thread = threading.Thread(target=self._check, name="kafka-check", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._poll_handle = loop.call_later(IDLE_POLL_S, self._tick)

    def _tick(self) -> None:
        """On the event loop: serve delivery reports and errors, then come back."""
        self._producer.poll(0)
        assert self._loop is not None
        self._busy = self.outstanding > 0
        delay = BUSY_POLL_S if self._busy else IDLE_POLL_S
        self._poll_handle = self._loop.call_later(delay, self._tick)

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued (bounded), stop the threads; returns records not delivered."""
        if self._poll_handle is not None:
            self._poll_handle.cancel()
        remaining = int(self._producer.flush(timeout_s))
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        if remaining:
            log.error("records still undelivered at shutdown", extra={"records": remaining})
        return remaining

    def check_kafka(self) -> bool:
        """One metadata request for the topic: proves a broker answers and the topic exists."""
        try:
            md = self._producer.list_topics(topic=self._topic, timeout=2.0)
            topic = md.topics.get(self._topic)
            if topic is None or topic.error is not None:
                why = f"topic {self._topic!r}: {topic.error if topic else 'missing'}"
                self._set_up(False, why)
            else:
                self._set_up(bool(md.brokers))
                if not self._topic_max_known and md.brokers:
                    topic_max = self._read_topic_max()
                    self._topic_max_known = topic_max is not None
                    self._set_limit(topic_max)
        except KafkaException as exc:
            self._set_up(False, str(exc))
        self._checked_at = time.monotonic()
        return self._kafka_up

    def _check(self) -> None:
        while not self._stop.wait(self._settings.kafka_check_interval_s):
            self.check_kafka()

    # --- producing ---------------------------------------------------------------------------

    def submit(
        self, messages: Sequence[DeviceMessage], done: Callable[[Exception | None], None]
    ) -> None:
        """Produce the upload's records; `done` runs on the event loop once the broker acked
        every one (None) or one failed (Unavailable or TooLarge). No future, no task: the
        delivery report calls back straight into the answer.

        Raises Unavailable or TooLarge at once when nothing can be produced. Nothing
        answered 200 is ever lost, and a retry of a 503 can at worst duplicate records,
        which the consumer's upserts absorb.
        """
        if self._fatal is not None:
            raise Unavailable("fatal", self._fatal)
        if not self._kafka_up:
            raise Unavailable("kafka_down", "Kafka is unreachable")
        limit = self.record_limit
        for message in messages:  # all or nothing: a record Kafka refuses by size never goes
            size = len(message.value) + len(message.device_sn)
            if size > limit:
                raise TooLarge(size, limit, self.limit_source)
        pending = _Upload(self, done, len(messages))
        produce = self._producer.produce
        topic = self._topic
        for message in messages:
            try:
                produce(topic, value=message.value, key=message.key, on_delivery=pending.report)
            except BufferError:
                raise Unavailable("queue_full", "the producer queue is full") from None
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise TooLarge(len(message.value), limit, "the producer") from None
                raise Unavailable("delivery_failed", str(exc)) from None
            self.outstanding += 1
        if not self._busy and self._loop is not None:  # poll every millisecond from now on
            self._busy = True
            if self._poll_handle is not None:
                self._poll_handle.cancel()
            self._poll_handle = self._loop.call_later(BUSY_POLL_S, self._tick)
        # No timer of our own: librdkafka reports every message by message.timeout.ms
        # (_MSG_TIMED_OUT at the latest), and /livez fails if the poll thread stops.


class TooLarge(Exception):
    """A record Kafka can never take (answered 413): retrying cannot help."""

    def __init__(self, size: int, limit: int, source: str) -> None:
        super().__init__(f"a record of {size} bytes is over the {limit} bytes {source} takes")
        self.size = size
        self.limit = limit
        self.source = source


class _Upload:
    """One upload's outstanding records: its delivery reports count down to one answer."""

    __slots__ = ("_done", "_owner", "error", "remaining")

    def __init__(
        self, owner: GatewayProducer, done: Callable[[Exception | None], None], records: int
    ) -> None:
        self._owner = owner
        self._done = done
        self.remaining = records
        self.error: Exception | None = None

    def report(self, err: KafkaError | None, _: Message) -> None:
        """librdkafka's delivery report (from poll(), on the event loop): one record's
        outcome; the last one answers the upload."""
        self._owner.outstanding -= 1
        if err is not None and self.error is None:
            if err.code() in _TOO_LARGE:
                self.error = TooLarge(-1, -1, f"the broker ({err.name()})")
            else:
                self.error = Unavailable("delivery_failed", f"{err.name()}: {err.str()}")
        self.remaining -= 1
        if self.remaining == 0:
            self._done(self.error)


_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
