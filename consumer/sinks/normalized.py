"""The normalized output topic: one compact JSON record per stored reading, keyed by SN.

For engines that keep long-term history from Kafka (ClickHouse's Kafka table engine,
Flink, a data lake loader): they read readings already decoded, bound to their customer
and deduplicated within the batch, without the wire contract's aliases and envelopes.
Enabled by NORMALIZED_TOPIC (e.g. `health-data.normalized`); the record's JSON Schema is
`json_schema()`, published as schemas/health-data.normalized.v1.schema.json.

Required: the offset is committed only once the broker acknowledged every record of the
batch (acks from all in-sync replicas, idempotent producer), so history has no holes. A
failed delivery resends the batch: delivery is at least once, and a reader deduplicates
on (sn, ts), the key the store of record uses too. A record follows the store: a reading
the DB refused is dead-lettered, never published here.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.settings import ConfigError
from consumer.sinks.base import (
    ORDER_OUTPUT,
    Abandoned,
    Policy,
    SinkBase,
    SinkBatch,
    SinkContext,
    SinkResult,
)
from consumer.sinks.dlq import dlq_producer_config
from consumer.sinks.errors import Retryable
from consumer.sinks.mysql import distinct_readings
from consumer.topics import admin_client, ensure_topic, partition_count
from schemas.record import HealthRecord

SCHEMA_ID = "urn:healthstream:schema:health-data.normalized:v1"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Every field a record may carry besides sn and ts, with its JSON type; absent = not sent.
FIELDS: dict[str, str] = {
    "customer_id": "integer",
    "org_id": "integer",
    "user_id": "integer",
    "heart_rate": "integer",
    "blood_oxygen": "integer",
    "temperature": "number",
    "pressure_high": "integer",
    "pressure_low": "integer",
    "stress": "integer",
    "step": "integer",
    "distance": "number",
    "calorie": "number",
    "latitude": "number",
    "longitude": "number",
    "altitude": "number",
    "sleep": "number",
    "upload_method": "string",
}


def record_value(record: HealthRecord) -> bytes:
    """The compact record: sn, ts (device local time, as stored) and the fields sent."""
    out: dict[str, Any] = {"sn": record.device_sn, "ts": record.timestamp.strftime(TIME_FORMAT)}
    for name in FIELDS:
        value = getattr(record, name)
        if value is not None:
            out[name] = float(value) if isinstance(value, Decimal) else value
    return orjson.dumps(out)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of `record_value`'s output."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "A stored health reading, normalized",
        "description": "One record per reading stored in t_user_health_data, keyed by the "
        "device SN; (sn, ts) identifies a reading (delivery is at least once).",
        "type": "object",
        "required": ["sn", "ts"],
        "additionalProperties": False,
        "properties": {
            "sn": {"type": "string", "minLength": 1},
            "ts": {
                "type": "string",
                "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
                "description": "Device local time (DEVICE_TIMEZONE), as stored",
            },
            **{name: {"type": kind} for name, kind in FIELDS.items()},
        },
    }


class _Acks:
    """The broker's answers for one batch's records."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self._left = expected
        self.error: str | None = None
        self.done = threading.Event()
        if expected == 0:
            self.done.set()

    def __call__(self, err: KafkaError | None, _msg: Message | None) -> None:
        with self._lock:
            if err is not None and self.error is None:
                self.error = str(err)
            self._left -= 1
            if self._left == 0:
                self.done.set()


class NormalizedSink(SinkBase):
    name = "normalized"
    dependency = "kafka"
    policy = Policy.REQUIRED
    order = ORDER_OUTPUT

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        source_topic: str,
        client_props: dict[str, str],
        delivery_timeout_s: float = 30.0,
    ) -> None:
        conf = dlq_producer_config(bootstrap_servers, client_props, delivery_timeout_s)
        self._conf = {**conf, "client.id": "healthstream-normalized", "linger.ms": 20}
        self.bootstrap_servers = bootstrap_servers
        self.client_props = client_props
        self.topic = topic
        self.source_topic = source_topic
        self._producer = Producer(self._conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="normalized", daemon=True)
        self._thread.start()

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        readings = distinct_readings(batch.records)
        acks = _Acks(len(readings))
        for record in readings:
            self._produce(record.device_sn.encode(), record_value(record), acks)
        while not acks.done.wait(0.2):
            if batch.cancel.is_set():
                raise Abandoned
        if acks.error is not None:
            raise Retryable(f"normalized records not delivered: {acks.error}")
        return SinkResult(written=len(readings))

    def _produce(self, key: bytes, value: bytes, acks: _Acks) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=acks)
                return
            except BufferError:  # local queue full: let the callbacks drain it
                time.sleep(0.05)
            except KafkaException as exc:
                acks(exc.args[0], None)  # answered now; the whole batch is resent
                if exc.args[0].fatal():
                    self._producer = Producer(self._conf)
                return

    def ready(self) -> str | None:
        """The topic exists (created with as many partitions as the source: keyed alike)."""
        try:
            admin = admin_client(self.bootstrap_servers, self.client_props)
            partitions = partition_count(admin, self.source_topic, 5.0)
            ensure_topic(admin, self.topic, partitions, timeout_s=5.0)
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc)[:300]}"
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)


def build_sink(context: SinkContext) -> NormalizedSink | None:
    s = context.settings
    if not s.normalized_topic:
        return None
    if s.normalized_topic in (s.kafka_topic, s.dlq_topic):
        raise ConfigError("NORMALIZED_TOPIC must differ from KAFKA_TOPIC and DLQ_TOPIC")
    return NormalizedSink(
        s.kafka_bootstrap_servers,
        s.normalized_topic,
        s.kafka_topic,
        s.kafka_client,
        s.dlq_delivery_timeout_s,
    )
