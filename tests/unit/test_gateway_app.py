"""The gateway app with a stand-in for librdkafka (no services): answers, order of acks
and answers, refusals, tokens, body limit, metrics, logs. The real-Kafka behaviour is
in tests/integration/test_gateway.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException
from starlette.testclient import TestClient

from gateway.app import Gateway, build_app
from gateway.metrics import GatewayMetrics, exposition
from gateway.producer import GatewayProducer, gateway_producer_config
from gateway.settings import GatewaySettings, load_settings
from tests.unit.payloads import SAMPLE_SN, SAMPLE_UPLOAD, watch_reading

UPLOAD = "/upload_health_data"
TOKEN = "s3cret-token-0123456789"


@dataclass
class FakeMessage:
    topic_name: str
    key_bytes: bytes
    value_bytes: bytes

    def key(self) -> bytes:
        return self.key_bytes

    def value(self) -> bytes:
        return self.value_bytes


@dataclass
class FakeKafka:
    """librdkafka's Producer surface the gateway uses; acks are held while `hold` is set."""

    config: dict[str, Any]
    acked: list[FakeMessage] = field(default_factory=list)
    pending: list[tuple[FakeMessage, Callable[..., None]]] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    up: bool = True
    queue_full: bool = False
    fail_with: KafkaError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[..., None]
    ) -> None:
        if self.queue_full:
            raise BufferError("Local: Queue full")
        with self.lock:
            self.pending.append((FakeMessage(topic, key, value), on_delivery))

    def poll(self, timeout: float) -> int:
        if self.hold.is_set() or not self.pending:
            time.sleep(min(timeout, 0.01))
            return 0
        with self.lock:
            batch, self.pending = self.pending, []
        for message, callback in batch:
            if self.fail_with is None:
                self.acked.append(message)
            callback(self.fail_with, message)
        return len(batch)

    def flush(self, timeout: float) -> int:
        self.hold.clear()
        self.poll(0)
        return len(self.pending)

    def list_topics(self, topic: str, timeout: float) -> Any:
        if not self.up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

        topic_md = SimpleNamespace(error=None, partitions={0: None})
        return SimpleNamespace(topics={topic: topic_md}, brokers={1: None})


@dataclass
class Harness:
    client: TestClient
    kafka: FakeKafka
    gateway: Gateway

    def post(self, body: bytes, **headers: str) -> Any:
        return self.client.post(UPLOAD, content=body, headers=headers)

    def metrics(self) -> str:
        return exposition(self.gateway.metrics).decode()


def make_harness(**overrides: Any) -> Iterator[Harness]:
    settings = load_settings(kafka_check_interval_s=60, **overrides)
    made: list[FakeKafka] = []

    def factory(config: dict[str, Any]) -> FakeKafka:
        made.append(FakeKafka(config))
        return made[0]

    metrics = GatewayMetrics()
    gateway = Gateway(settings, metrics, GatewayProducer(settings, metrics, factory))
    with TestClient(build_app(gateway)) as client:
        yield Harness(client, made[0], gateway)


@pytest.fixture
def gw() -> Iterator[Harness]:
    yield from make_harness()


def test_a_watch_upload_is_answered_like_the_legacy_endpoint(gw: Harness) -> None:
    response = gw.post(SAMPLE_UPLOAD, **{"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "message": "Data uploaded: 1 readings of 1 devices",
    }
    assert [(m.topic_name, m.key_bytes, m.value_bytes) for m in gw.kafka.acked] == [
        ("health-data", SAMPLE_SN.encode(), SAMPLE_UPLOAD)
    ]


def test_multi_device_upload_becomes_one_keyed_record_per_device(gw: Harness) -> None:
    readings = [watch_reading(deviceSn=sn) for sn in ("SN-1", "SN-2", "SN-1")]
    readings[2]["timestamp"] = "2025-05-31 21:18:25"
    response = gw.post(orjson.dumps({"data": readings, "orgId": 3}))
    assert response.status_code == 200
    assert response.json()["message"] == "Data uploaded: 3 readings of 2 devices"
    assert [m.key_bytes for m in gw.kafka.acked] == [b"SN-1", b"SN-2"]
    first = orjson.loads(gw.kafka.acked[0].value_bytes)
    assert first["orgId"] == 3 and len(first["data"]) == 2


def test_no_answer_before_the_broker_acked_every_record(gw: Harness) -> None:
    gw.kafka.hold.set()
    body = orjson.dumps({"data": [watch_reading(deviceSn="SN-1"), watch_reading(deviceSn="SN-2")]})
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(r=gw.post(body)))
    sender.start()
    deadline = time.monotonic() + 30
    while len(gw.kafka.pending) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(gw.kafka.pending) == 2, "the upload never reached the producer"
    # Both records are queued and none is acked: the request must still be waiting.
    assert sender.is_alive() and "r" not in result
    assert gw.kafka.acked == []
    gw.kafka.hold.clear()
    sender.join(30)
    assert result["r"].status_code == 200
    assert len(gw.kafka.acked) == 2


def test_a_failed_delivery_is_a_503_with_retry_after(gw: Harness) -> None:
    gw.kafka.fail_with = KafkaError(KafkaError._MSG_TIMED_OUT)
    response = gw.post(SAMPLE_UPLOAD)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["status"] == "error"
    assert 'health_gateway_produce_errors_total{reason="delivery_failed"} 1.0' in gw.metrics()


def test_a_full_producer_queue_is_a_503(gw: Harness) -> None:
    gw.kafka.queue_full = True
    response = gw.post(SAMPLE_UPLOAD)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert 'health_gateway_produce_errors_total{reason="queue_full"} 1.0' in gw.metrics()


def test_kafka_down_refuses_uploads_at_once_and_fails_readiness(gw: Harness) -> None:
    assert gw.client.get("/readyz").status_code == 200
    gw.kafka.up = False
    assert gw.gateway.producer.check_kafka() is False
    ready = gw.client.get("/readyz")
    assert ready.status_code == 503
    response = gw.post(SAMPLE_UPLOAD)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert gw.kafka.pending == [] and gw.kafka.acked == []
    assert gw.client.get("/livez").status_code == 200  # alive: a restart would not help
    assert "health_gateway_kafka_up 0.0" in gw.metrics()
    gw.kafka.up = True
    assert gw.gateway.producer.check_kafka() is True
    assert gw.post(SAMPLE_UPLOAD).status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<xml/>", "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"data": []}', "empty_envelope"),
        (b'{"data": {"heart_rate": 70, "timestamp": "2025-05-31 21:18:24"}}', "no_device_sn"),
    ],
)
def test_unroutable_bodies_are_a_400_and_produce_nothing(
    gw: Harness, body: bytes, reason: str
) -> None:
    response = gw.post(body)
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert gw.kafka.acked == [] and gw.kafka.pending == []
    assert f'health_gateway_uploads_rejected_total{{reason="{reason}"}} 1.0' in gw.metrics()


def test_body_limit_by_content_length_and_by_streamed_size() -> None:
    for harness in make_harness(max_body_bytes=1024):
        big = orjson.dumps({"data": watch_reading(note="x" * 2000)})
        response = harness.post(big)
        assert response.status_code == 413
        assert response.json()["status"] == "error"

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b" " * 200

        streamed = harness.client.post(UPLOAD, content=chunks())
        assert streamed.status_code == 413
        assert harness.post(SAMPLE_UPLOAD).status_code == 200
        assert harness.kafka.acked and len(harness.kafka.acked) == 1


def test_api_tokens_when_configured() -> None:
    for harness in make_harness(api_tokens=f"{TOKEN}, other-token-abcdefghij"):
        assert harness.post(SAMPLE_UPLOAD).status_code == 401
        assert harness.post(SAMPLE_UPLOAD, **{"X-Api-Token": "wrong"}).status_code == 401
        ok = harness.post(SAMPLE_UPLOAD, **{"X-Api-Token": TOKEN})
        assert ok.status_code == 200
        other = harness.post(SAMPLE_UPLOAD, **{"x-api-token": "other-token-abcdefghij"})
        assert other.status_code == 200
        assert len(harness.kafka.acked) == 2
        assert 'health_gateway_uploads_rejected_total{reason="unauthorized"} 2.0' in (
            harness.metrics()
        )


def test_strict_mode_refuses_what_the_consumer_would_dead_letter() -> None:
    for harness in make_harness(reject_invalid_readings=True):
        bad = orjson.dumps({"data": [watch_reading(), watch_reading(heart_rate="fast")]})
        response = harness.post(bad)
        assert response.status_code == 400
        assert "reading[1] schema_violation" in response.json()["message"]
        assert harness.kafka.acked == []
        assert harness.post(SAMPLE_UPLOAD).status_code == 200


def test_default_mode_forwards_invalid_readings_for_the_dead_letter_path(gw: Harness) -> None:
    bad = orjson.dumps({"data": [watch_reading(), watch_reading(heart_rate="fast")]})
    assert gw.post(bad).status_code == 200
    assert [m.value_bytes for m in gw.kafka.acked] == [bad]


def test_metrics_count_requests_latency_records_and_in_flight(gw: Harness) -> None:
    gw.post(SAMPLE_UPLOAD)
    gw.post(b"nope")
    text = gw.metrics()
    for line in (
        'health_gateway_requests_total{code="200",handler="/upload_health_data"} 1.0',
        'health_gateway_requests_total{code="400",handler="/upload_health_data"} 1.0',
        "health_gateway_upload_duration_seconds_count 2.0",
        "health_gateway_records_produced_total 1.0",
        "health_gateway_readings_accepted_total 1.0",
        "health_gateway_requests_in_flight 0.0",
        "health_gateway_kafka_up 1.0",
    ):
        assert line in text, line
    served = gw.client.get("/metrics")
    assert served.status_code == 200 and "health_gateway_requests_total" in served.text


def test_rejections_are_logged_without_the_payload(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    secret_sn = "PAYLOAD-MARKER-123"
    with caplog.at_level(logging.INFO):
        gw.post(orjson.dumps({"data": {"deviceSn": "bad sn", "note": secret_sn}}))
    rejected = [r for r in caplog.records if r.getMessage() == "upload rejected"]
    assert [getattr(r, "reason", None) for r in rejected] == ["no_device_sn"]
    for record in caplog.records:
        assert secret_sn not in record.getMessage()
        assert secret_sn not in str(vars(record))


def test_method_and_path_like_the_legacy_endpoint(gw: Harness) -> None:
    assert gw.client.get(UPLOAD).status_code == 405
    assert gw.client.post("/upload").status_code == 404


def test_openapi_is_served(gw: Harness) -> None:
    response = gw.client.get("/openapi.json")
    assert response.status_code == 200
    assert set(response.json()["paths"][UPLOAD]["post"]["responses"]) == {
        "200",
        "400",
        "401",
        "413",
        "503",
    }


def test_producer_config_keeps_the_contract() -> None:
    config = gateway_producer_config(GatewaySettings(delivery_timeout_s=7, linger_ms=2))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["message.timeout.ms"] == 7000
    assert config["linger.ms"] == 2
