"""Create topics when missing (the consumer's DLQ, the simulator's input topic)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)


def admin_client(bootstrap_servers: str, client_props: dict[str, str] | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers, **(client_props or {})})


def ensure_topic(
    admin: AdminClient,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> int:
    """Create `name` unless it exists; return its partition count."""
    existing = admin.list_topics(timeout=timeout_s).topics
    if name in existing:
        return len(existing[name].partitions)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)],
        request_timeout=timeout_s,
    )
    try:
        futures[name].result(timeout=timeout_s)
        log.info("created topic", extra={"topic": name, "partitions": partitions})
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return partition_count(admin, name, timeout_s)


def partition_count(admin: AdminClient, name: str, timeout_s: float = 30.0) -> int:
    topic = admin.list_topics(topic=name, timeout=timeout_s).topics.get(name)
    if topic is None or topic.error is not None:
        raise RuntimeError(
            f"topic {name!r} is not available: {topic.error if topic else 'missing'}"
        )
    return len(topic.partitions)


def broker_max_message_bytes(admin: AdminClient, timeout_s: float = 30.0) -> int:
    """The smallest `message.max.bytes` among the brokers (any of them may lead the DLQ)."""
    brokers = admin.list_topics(timeout=timeout_s).brokers
    resources = [ConfigResource(ResourceType.BROKER, str(b)) for b in brokers]
    values = []
    for future in admin.describe_configs(resources, request_timeout=timeout_s).values():
        entry = future.result(timeout=timeout_s).get("message.max.bytes")
        if entry is not None and entry.value is not None:
            values.append(int(entry.value))
    if not values:
        raise RuntimeError("no broker reported message.max.bytes")
    return min(values)


def topic_max_message_bytes(admin: AdminClient, name: str, timeout_s: float = 30.0) -> int:
    """The topic's `max.message.bytes` (the broker's default unless set on the topic)."""
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name)], request_timeout=timeout_s
    )
    for future in futures.values():
        entry = future.result(timeout=timeout_s).get("max.message.bytes")
        if entry is not None and entry.value is not None:
            return int(entry.value)
    raise RuntimeError(f"topic {name!r} did not report max.message.bytes")
