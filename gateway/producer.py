"""The Kafka side of an upload: produce, then wait for the broker's acks, from asyncio.

A 200 must mean durable in Kafka, so every record is produced with `acks=all` by an
idempotent producer (no duplicates or reordering from broker retries) and the request
waits for its delivery report. librdkafka serves delivery reports in whichever thread
calls `poll()`; a dedicated thread does that and hands each batch of reports to the event
loop in one `call_soon_threadsafe`, so the loop never blocks on Kafka.

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

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.split import DeviceMessage
from schemas.publish import producer_config

log = logging.getLogger("gateway.producer")

_POLL_S = 0.05


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
            **settings.kafka_client,
            "linger.ms": settings.linger_ms,
            "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
            "queue.buffering.max.messages": settings.queue_max_messages,
            "client.id": "health-gateway",
        },
    )


Resolution = tuple["asyncio.Future[None]", KafkaError | None]


class GatewayProducer:
    """One confluent-kafka Producer per worker process, shared by all its requests."""

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._topic = settings.kafka_topic
        config = gateway_producer_config(settings)
        config["error_cb"] = self._on_error
        self._producer = factory(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[Resolution] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._kafka_up = False
        self._fatal: str | None = None
        self._checked_at = 0.0

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

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.check_kafka()
        for name, target in (("kafka-poll", self._poll_forever), ("kafka-check", self._check)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued (bounded), stop the threads; returns records not delivered."""
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
        except KafkaException as exc:
            self._set_up(False, str(exc))
        self._checked_at = time.monotonic()
        return self._kafka_up

    def _check(self) -> None:
        while not self._stop.wait(self._settings.kafka_check_interval_s):
            self.check_kafka()

    def _poll_forever(self) -> None:
        producer = self._producer
        while not self._stop.is_set():
            producer.poll(_POLL_S)
            if self._done:
                batch, self._done = self._done, []
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(_resolve, batch)
                except RuntimeError:  # the loop closed under us: nobody waits any more
                    return

    # --- producing ---------------------------------------------------------------------------

    def _delivered(self, future: asyncio.Future[None], err: KafkaError | None, _: Message) -> None:
        self._done.append((future, err))

    async def send(self, messages: Sequence[DeviceMessage]) -> None:
        """Produce the upload's records and return once the broker acked every one.

        Raises Unavailable (answered 503): nothing answered 200 is ever lost, and a retry
        of a 503 can at worst duplicate records, which the consumer's upserts absorb.
        """
        if self._fatal is not None:
            raise Unavailable("fatal", self._fatal)
        if not self._kafka_up:
            raise Unavailable("kafka_down", "Kafka is unreachable")
        loop = self._loop
        assert loop is not None, "start() first"
        futures: list[asyncio.Future[None]] = []
        produce = self._producer.produce
        topic = self._topic
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            try:
                produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    on_delivery=functools.partial(self._delivered, future),
                )
            except BufferError:
                raise Unavailable("queue_full", "the producer queue is full") from None
            except KafkaException as exc:
                raise Unavailable("delivery_failed", str(exc)) from None
            futures.append(future)
        # No timer of our own: librdkafka reports every message by message.timeout.ms
        # (_MSG_TIMED_OUT at the latest), and /livez fails if the poll thread stops.
        try:
            if len(futures) == 1:
                await futures[0]
            else:  # gather retrieves every outcome, so none is left unobserved
                for outcome in await asyncio.gather(*futures, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        raise outcome
        except _DeliveryError as exc:
            raise Unavailable("delivery_failed", f"{exc.err.name()}: {exc.err.str()}") from None
        self._metrics.records_produced.inc(len(futures))


class _DeliveryError(Exception):
    def __init__(self, err: KafkaError) -> None:
        super().__init__(err.str())
        self.err = err


def _resolve(batch: list[Resolution]) -> None:
    """On the event loop: settle each upload's futures with its delivery result."""
    for future, err in batch:
        if future.done():  # the request gave up (client gone, timeout)
            continue
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(_DeliveryError(err))
