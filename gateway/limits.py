"""How large one Kafka record of the gateway may be, and whether GATEWAY_MAX_BODY_BYTES fits.

A one-device upload is forwarded byte for byte as one record, so a body the HTTP limit
admits can still be more than Kafka takes: the producer's `message.max.bytes` (librdkafka
default 1,000,000) or the topic's `max.message.bytes` (the broker's default, 1,048,588).
Such an upload can never succeed, so it is a 413 before anything is produced, never a 503
that the watch retries forever (issue 17, B2). At start-up the gateway compares the limits
and warns, naming both, when the body limit admits uploads Kafka cannot take.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.limits")

PRODUCER_DEFAULT_MAX = 1_000_000  # librdkafka's message.max.bytes default
# librdkafka counts a record as key + value + at most 36 bytes of v2 framing; the broker
# counts the whole batch (61 bytes of header) against the topic's max.message.bytes.
PRODUCER_OVERHEAD = 64
BATCH_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class RecordLimit:
    """Largest key + value the gateway produces, and which setting decides it."""

    max_bytes: int
    source: str


def producer_max_bytes(settings: GatewaySettings) -> int:
    """The gateway producer's `message.max.bytes` (GATEWAY_KAFKA_CLIENT_MESSAGE_MAX_BYTES)."""
    return int(settings.kafka_client.get("message.max.bytes", PRODUCER_DEFAULT_MAX))


def record_limit(settings: GatewaySettings, topic_max: int | None) -> RecordLimit:
    producer_max = producer_max_bytes(settings)
    limit = RecordLimit(
        producer_max - PRODUCER_OVERHEAD,
        f"the producer's message.max.bytes={producer_max} (GATEWAY_KAFKA_CLIENT_MESSAGE_MAX_BYTES)",
    )
    if topic_max is not None and topic_max - BATCH_OVERHEAD < limit.max_bytes:
        limit = RecordLimit(
            topic_max - BATCH_OVERHEAD,
            f"the topic {settings.kafka_topic}'s max.message.bytes={topic_max}",
        )
    return limit


def read_topic_max_bytes(settings: GatewaySettings, timeout_s: float = 5.0) -> int | None:
    """The topic's `max.message.bytes` from the admin API, or None when it cannot be read
    (Kafka down, no DescribeConfigs permission): then the producer's limit decides alone."""
    config: dict[str, Any] = {
        **settings.kafka_client,
        "bootstrap.servers": settings.kafka_bootstrap_servers,
    }
    config.pop("message.max.bytes", None)
    try:
        admin = AdminClient(config)
        futures = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, settings.kafka_topic)], request_timeout=timeout_s
        )
        for future in futures.values():
            entry = future.result(timeout=timeout_s).get("max.message.bytes")
            if entry is not None and entry.value is not None:
                return int(entry.value)
    except (KafkaException, ValueError, TimeoutError) as exc:
        log.warning("cannot read the topic's max.message.bytes", extra={"error": str(exc)})
    return None


def limit_warnings(settings: GatewaySettings, topic_max: int | None) -> list[str]:
    """What the operator should know about the limits, each message naming both values."""
    warnings = []
    limit = record_limit(settings, topic_max)
    if settings.max_body_bytes > limit.max_bytes:
        warnings.append(
            f"GATEWAY_MAX_BODY_BYTES={settings.max_body_bytes} admits one-device uploads "
            f"over the {limit.max_bytes} bytes Kafka takes per record ({limit.source}): "
            "those are answered 413; raise both together to accept them"
        )
    producer_max = producer_max_bytes(settings)
    if topic_max is not None and producer_max > topic_max:
        warnings.append(
            f"the producer's message.max.bytes={producer_max} "
            f"(GATEWAY_KAFKA_CLIENT_MESSAGE_MAX_BYTES) is over the topic "
            f"{settings.kafka_topic}'s max.message.bytes={topic_max}: records are held to "
            f"{limit.max_bytes} bytes"
        )
    return warnings
