"""The gateway's server and endpoints, on a real socket, with a stand-in for librdkafka (no
services): answers, order of acks and answers, refusals, tokens, body and record limits,
HTTP/1.0 and pipelining, metrics, logs. The real-Kafka behaviour is in
tests/integration/test_gateway.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import uvloop
from confluent_kafka import KafkaError, KafkaException

from gateway.app import Gateway
from gateway.limits import limit_warnings, record_limit
from gateway.metrics import exposition
from gateway.producer import gateway_producer_config
from gateway.server import listen
from gateway.settings import GatewaySettings, load_settings
from gateway.worker import build, run
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
    client: httpx.Client
    kafka: FakeKafka
    gateway: Gateway
    port: int

    def post(self, body: bytes, **headers: str) -> httpx.Response:
        headers.setdefault("Content-Type", "application/json")
        return self.client.post(UPLOAD, content=body, headers=headers)

    def metrics(self) -> str:
        self.gateway.flush_metrics()
        return exposition(self.gateway.metrics).decode()

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send bytes as they are; everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def make_harness(topic_max: int | None = None, **overrides: Any) -> Iterator[Harness]:
    """The real server and endpoints in a thread of their own, on a free port."""
    settings = load_settings(kafka_check_interval_s=60, **overrides)
    made: list[FakeKafka] = []

    def factory(config: dict[str, Any]) -> FakeKafka:
        made.append(FakeKafka(config))
        return made[0]

    gateway, server = build(settings, factory, topic_max_reader=lambda: topic_max)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    loop = uvloop.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(run(gateway, server, sock, stop),), daemon=True
    )
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    client.get("/livez")
                    break
                except httpx.TransportError:
                    time.sleep(0.02)
            yield Harness(client, made[0], gateway, port)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


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

        streamed = harness.client.post(
            UPLOAD, content=chunks(), headers={"Content-Type": "application/json"}
        )
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
        "415",
        "503",
    }


def test_producer_config_keeps_the_contract() -> None:
    config = gateway_producer_config(GatewaySettings(delivery_timeout_s=7, linger_ms=2))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["message.timeout.ms"] == 7000
    assert config["linger.ms"] == 2
    assert config["queue.buffering.max.kbytes"] == 65536  # memory bounded in bytes too


def _split_answers(raw: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """HTTP answers read back to back, each delimited by its own Content-Length only."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
        assert b"transfer-encoding" not in headers
        length = int(headers[b"content-length"])
        answers.append((status, headers, rest[:length]))
        raw = rest[length:]
    return answers


def test_an_http_1_0_request_without_host_gets_a_content_length_answer(gw: Harness) -> None:
    request = (
        b"POST /upload_health_data HTTP/1.0\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(SAMPLE_UPLOAD), SAMPLE_UPLOAD)
    )
    ((status, headers, body),) = _split_answers(gw.raw(request))
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"connection"] == b"close"  # HTTP/1.0 without keep-alive: closed after
    assert orjson.loads(body) == {
        "status": "success",
        "message": "Data uploaded: 1 readings of 1 devices",
    }


def test_pipelined_requests_are_answered_in_order(gw: Harness) -> None:
    gw.kafka.hold.set()  # the first upload's ack comes after /livez could have answered
    first = orjson.dumps({"data": watch_reading(deviceSn="PIPE-1")})
    second = orjson.dumps({"data": [watch_reading(deviceSn="PIPE-2")] * 2})
    request = b"".join(
        [
            b"POST /upload_health_data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(first), first),
            b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /upload_health_data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(second), second),
        ]
    )
    result: dict[str, bytes] = {}
    sender = threading.Thread(target=lambda: result.update(raw=gw.raw(request)))
    sender.start()
    deadline = time.monotonic() + 30
    while len(gw.kafka.pending) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "raw" not in result  # nothing can be answered before the first upload's ack
    gw.kafka.hold.clear()
    sender.join(30)
    answers = _split_answers(result["raw"])
    assert [orjson.loads(body)["message"] for _, _, body in answers] == [
        "Data uploaded: 1 readings of 1 devices",
        "alive",
        "Data uploaded: 2 readings of 1 devices",
    ]
    assert [m.key_bytes for m in gw.kafka.acked] == [b"PIPE-1", b"PIPE-2"]


def test_every_answer_has_a_content_length_and_no_chunking(gw: Harness) -> None:
    gw.kafka.fail_with = None
    requests = [
        ("POST", UPLOAD, SAMPLE_UPLOAD, "application/json"),  # 200
        ("POST", UPLOAD, b"{", "application/json"),  # 400
        ("POST", UPLOAD, SAMPLE_UPLOAD, "text/plain"),  # 415
        ("GET", UPLOAD, b"", ""),  # 405
        ("GET", "/nope", b"", ""),  # 404
        ("GET", "/livez", b"", ""),
        ("GET", "/readyz", b"", ""),
        ("GET", "/metrics", b"", ""),
        ("GET", "/openapi.json", b"", ""),
    ]
    seen = set()
    for method, path, body, content_type in requests:
        head = f"{method} {path} HTTP/1.0\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        raw = gw.raw(head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        ((status, headers, answer),) = _split_answers(raw)
        assert int(headers[b"content-length"]) == len(answer) > 0, (path, status)
        seen.add(int(status.split()[1]))
    assert seen == {200, 400, 404, 405, 415}


def test_a_malformed_request_is_a_400_and_the_connection_closes(gw: Harness) -> None:
    ((status, headers, body),) = _split_answers(gw.raw(b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"connection"] == b"close"
    assert orjson.loads(body)["status"] == "error"


def test_expect_100_continue_is_honoured(gw: Harness) -> None:
    request = (
        b"POST /upload_health_data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SAMPLE_UPLOAD), SAMPLE_UPLOAD)
    )
    raw = gw.raw(request)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json", 200),
        ("Application/JSON; charset=utf-8", 200),
        ("application/vnd.watch+json", 200),
    ],
)
def test_content_type_must_be_json_like_the_legacy_get_json(
    gw: Harness, content_type: str | None, status: int
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = gw.client.post(UPLOAD, content=SAMPLE_UPLOAD, headers=headers)
    assert response.status_code == status
    if status == 415:
        assert response.json() == {
            "status": "error",
            "message": "Content-Type must be application/json",
        }
        assert gw.kafka.acked == []
        assert 'health_gateway_uploads_rejected_total{reason="unsupported_media_type"} 1.0' in (
            gw.metrics()
        )


def _upload_of_size(sn: str, record_bytes: int) -> bytes:
    """A one-device upload whose Kafka record (key + value) is exactly `record_bytes`."""
    body = orjson.dumps({"data": watch_reading(deviceSn=sn, note="")})
    pad = record_bytes - len(body) - len(sn)
    assert pad >= 0
    return orjson.dumps({"data": watch_reading(deviceSn=sn, note="x" * pad)})


@pytest.mark.parametrize("topic_max", [None, 3000])
def test_a_record_kafka_cannot_take_is_a_413_at_limit_plus_one(topic_max: int | None) -> None:
    """Issue 17 B2: between Kafka's record limit and GATEWAY_MAX_BODY_BYTES an upload can
    never succeed; it is a 413 before anything is produced, never a 503."""
    overrides = {"kafka_client": {"message.max.bytes": "5000"}, "max_body_bytes": 8192}
    for harness in make_harness(topic_max=topic_max, **overrides):
        limit = harness.gateway.producer.record_limit
        assert limit == (4936 if topic_max is None else 2872)
        for size, expected in ((limit - 1, 200), (limit, 200), (limit + 1, 413)):
            response = harness.post(_upload_of_size("LIM-1", size))
            assert response.status_code == expected, size
        message = response.json()["message"]
        assert str(limit) in message and str(limit + 1) in message
        assert ("max.message.bytes=3000" if topic_max else "message.max.bytes=5000") in message
        assert len(harness.kafka.acked) == 2  # the 413 produced nothing
        assert 'health_gateway_uploads_rejected_total{reason="record_too_large"} 1.0' in (
            harness.metrics()
        )
        assert "produce_errors_total{" not in harness.metrics()  # not blamed on Kafka


def test_a_record_the_broker_refuses_by_size_is_a_413_not_a_503(gw: Harness) -> None:
    gw.kafka.fail_with = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    response = gw.post(SAMPLE_UPLOAD)
    assert response.status_code == 413
    assert "retry-after" not in response.headers


def test_start_up_warns_when_the_body_limit_is_over_the_record_limit() -> None:
    settings = load_settings(max_body_bytes=1_048_576)
    (warning,) = limit_warnings(settings, topic_max=None)
    assert "GATEWAY_MAX_BODY_BYTES=1048576" in warning
    assert "message.max.bytes=1000000" in warning
    big = load_settings(max_body_bytes=1_000_000, kafka_client={"message.max.bytes": "2000000"})
    warnings = limit_warnings(big, topic_max=1_048_588)
    assert any("max.message.bytes=1048588" in w and "=2000000" in w for w in warnings)
    assert record_limit(big, 1_048_588).max_bytes == 1_048_588 - 128
    fits = load_settings(max_body_bytes=900_000)
    assert limit_warnings(fits, topic_max=1_048_588) == []


@pytest.mark.parametrize("rate", [0.0, 500.0])
def test_the_load_client_sends_every_upload_and_reads_every_answer(
    gw: Harness, rate: float
) -> None:
    """gateway.client (the simulator's and the benchmark's HTTP client) on keep-alive
    connections: every body is answered once, good ones 200, the unroutable one 400."""
    from gateway.client import Sent, post_uploads

    bodies = [orjson.dumps({"data": watch_reading(deviceSn=f"CLI-{i}")}) for i in range(40)]
    bodies[7] = b"{not json"
    seen: list[Sent] = []
    post_uploads(
        f"http://127.0.0.1:{gw.port}",
        iter(bodies),
        rate=rate,
        duration_s=None,
        connections=4,
        on_sent=seen.append,
    )
    assert sorted(s.index for s in seen) == list(range(40))
    assert {s.index: s.status for s in seen if s.status != 200} == {7: 400}
    assert len(gw.kafka.acked) == 39
    assert all(s.answered >= s.due for s in seen)


def test_an_endless_request_head_is_a_400_not_unbounded_memory(gw: Harness) -> None:
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"y" * 70_000 + b"\r\n\r\n"
    ((status, headers, _),) = _split_answers(gw.raw(head))
    assert status == b"HTTP/1.1 400 Bad Request" and headers[b"connection"] == b"close"
