"""Gateway-side producer helper: keys, serialisation, and Java-compatible partitioning."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from hypothesis import given
from hypothesis import strategies as st

from schemas import publish as publish_module
from schemas.publish import (
    make_producer,
    murmur2,
    murmur2_partition,
    producer_config,
    publish,
)
from tests.unit.payloads import SAMPLE_SN, SAMPLE_UPLOAD, envelope, watch_reading

# Kafka's own vectors (clients/.../UtilsTest.testMurmur2): the Java client's hashes.
JAVA_MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2)
def test_murmur2_matches_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_is_to_positive_hash_modulo_count() -> None:
    assert murmur2_partition(b"foobar", 50) == (-790332482 & 0x7FFFFFFF) % 50 == 16
    assert murmur2_partition(b"21", 1) == 0
    with pytest.raises(ValueError):
        murmur2_partition(b"21", 0)


@given(st.binary(max_size=80), st.integers(1, 500))
def test_partition_is_in_range_and_hash_is_signed_32_bit(key: bytes, partitions: int) -> None:
    assert -(2**31) <= murmur2(key) < 2**31
    assert 0 <= murmur2_partition(key, partitions) < partitions


def test_producer_config_defaults() -> None:
    config = producer_config("kafka-1:9092,kafka-2:9092")
    assert config == {
        "bootstrap.servers": "kafka-1:9092,kafka-2:9092",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "acks": "all",
    }


def test_producer_config_overrides_win() -> None:
    config = producer_config("k:9092", **{"linger.ms": 20, "client.id": "gateway-7"})
    assert (config["linger.ms"], config["client.id"]) == (20, "gateway-7")
    assert config["partitioner"] == "murmur2_random"


def test_make_producer_builds_a_configured_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_producer(config: dict[str, Any]) -> str:
        seen.update(config)
        return "producer"

    monkeypatch.setattr(publish_module, "Producer", fake_producer)
    assert make_producer("k:9092", **{"client.id": "tool"}) == "producer"  # type: ignore[comparison-overlap]
    assert seen == producer_config("k:9092", **{"client.id": "tool"})


def test_librdkafka_accepts_the_configuration() -> None:
    producer = make_producer("127.0.0.1:1", **{"log_level": 0})
    assert isinstance(producer, Producer)
    assert producer.flush(0) == 0


def test_librdkafka_places_keys_where_murmur2_partition_says() -> None:
    """librdkafka's in-process mock cluster: what the helper configures is what Java does."""
    producer = make_producer("", **{"test.mock.num.brokers": 1, "log_level": 0})
    delivered: list[tuple[KafkaError | None, bytes, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        delivered.append((err, msg.key() or b"", msg.partition() or 0))

    sns = [f"CRFTQ2340900{i:04d}" for i in range(64)]
    for sn in sns:
        publish(producer, "health-data", sn, envelope(watch_reading(deviceSn=sn)), on_delivery)
    assert producer.flush(30) == 0
    partitions = len(
        producer.list_topics("health-data", timeout=10).topics["health-data"].partitions
    )
    assert partitions > 1
    assert len(delivered) == len(sns)
    for err, key, partition in delivered:
        assert err is None
        assert partition == murmur2_partition(key, partitions), key


class FakeProducer:
    def __init__(self, full_times: int = 0) -> None:
        self.produced: list[dict[str, Any]] = []
        self.polls: list[float] = []
        self.full_times = full_times

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full_times:
            self.full_times -= 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, **kwargs})

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0


def test_publish_keys_by_device_sn_and_serialises_dicts_with_orjson() -> None:
    producer = FakeProducer()
    payload = envelope(watch_reading())
    publish(producer, "health-data", SAMPLE_SN, payload)  # type: ignore[arg-type]
    [sent] = producer.produced
    assert sent == {
        "topic": "health-data",
        "value": orjson.dumps(payload),
        "key": SAMPLE_SN.encode(),
    }
    assert producer.polls == [0]


def test_publish_passes_bytes_through_with_the_delivery_callback() -> None:
    producer = FakeProducer()

    def callback(err: KafkaError | None, msg: Message) -> None:
        pass

    publish(producer, "t", "SN-ü", SAMPLE_UPLOAD, on_delivery=callback)  # type: ignore[arg-type]
    [sent] = producer.produced
    assert sent["value"] is SAMPLE_UPLOAD
    assert sent["key"] == "SN-ü".encode()
    assert sent["on_delivery"] is callback


def test_publish_waits_out_a_full_queue() -> None:
    producer = FakeProducer(full_times=2)
    publish(producer, "t", SAMPLE_SN, b"{}")  # type: ignore[arg-type]
    assert len(producer.produced) == 1
    assert producer.polls == [0.05, 0.05, 0]


def test_publish_gives_up_when_the_queue_stays_full() -> None:
    producer = FakeProducer(full_times=10**9)
    with pytest.raises(BufferError):
        publish(producer, "t", SAMPLE_SN, b"{}", queue_full_timeout=0.1)  # type: ignore[arg-type]


def test_publish_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="device_sn"):
        publish(FakeProducer(), "t", "", b"{}")  # type: ignore[arg-type]
