"""health-gateway against real Kafka (the shared broker, or a private one the test stops),
and end to end through a real consumer replica into MariaDB."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.decode import decode_message
from schemas.publish import murmur2_partition
from tests.integration.gateway_stack import GatewayProcess, PrivateKafka, read_all
from tests.integration.stack import KAFKA, Stack, wait_for
from tests.unit.payloads import watch_reading

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789"


def reading(sn: Any, second: int, **extra: Any) -> dict[str, Any]:
    ts = dt.datetime(2025, 6, 1, 8, 0, 0) + dt.timedelta(seconds=second)
    return watch_reading(deviceSn=sn, timestamp=ts.strftime("%Y-%m-%d %H:%M:%S"), **extra)


@pytest.fixture
def gateway_for(stack: Stack) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def start(workers: int = 2, **env: str) -> GatewayProcess:
        gw = GatewayProcess(
            {
                "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
                "GATEWAY_KAFKA_TOPIC": stack.topic,
                "GATEWAY_WORKERS": str(workers),
                **env,
            }
        )
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    workdir = Path(tempfile.mkdtemp(prefix="hs-private-kafka-"))
    kafka = PrivateKafka(workdir)
    try:
        kafka.prepare()
        yield kafka.start()
    finally:
        kafka.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def test_every_payload_shape_is_produced_keyed_by_sn_on_the_java_partition(
    stack: Stack, gateway_for: Any
) -> None:
    gw = gateway_for()
    uploads = [
        {"data": reading("GW-A", 1)},
        {"data": [reading("GW-A", 2), reading("GW-A", 3)]},
        {"data": {"data": reading("GW-B", 4)}, "customerId": 5},
        {"data": {"data": [reading("GW-B", 5)], "userId": 6}, "orgId": "7"},
        reading("GW-C", 6),
        {"data": {"id": "GW-C", "cjsj": "2025-06-01 08:00:07", "xlv": 70}},
        {"data": reading(991234, 8)},
        # several devices in one upload, interleaved, envelope-level ids
        {
            "data": [reading("GW-D", 9), reading("GW-E", 10), reading("GW-D", 11)],
            "customerId": 42,
        },
    ]
    for body in uploads:
        status, _, answer = gw.post(orjson.dumps(body))
        assert status == 200, answer
        assert orjson.loads(answer)["status"] == "success"

    messages = read_all(KAFKA, stack.topic, expected=9)
    assert len(messages) == 9  # 8 uploads, the last one split in two
    by_key: dict[bytes, list[Any]] = {}
    for m in messages:
        records = decode_message(m.value()).records
        assert {r.device_sn.encode() for r in records} == {m.key()}
        assert m.partition() == murmur2_partition(m.key(), stack.partitions)
        by_key.setdefault(m.key(), []).append(m)
    assert set(by_key) == {b"GW-A", b"GW-B", b"GW-C", b"991234", b"GW-D", b"GW-E"}
    d = orjson.loads(by_key[b"GW-D"][0].value())
    assert d["customerId"] == 42 and [r["timestamp"][-2:] for r in d["data"]] == ["09", "11"]
    e = orjson.loads(by_key[b"GW-E"][0].value())
    assert e["customerId"] == 42 and len(e["data"]) == 1
    # one device's uploads stay in order on its partition
    a = sorted(by_key[b"GW-A"], key=lambda m: m.offset())
    assert [len(decode_message(m.value()).records) for m in a] == [1, 2]
    assert gw.metric("health_gateway_records_produced_total") == 9


def test_a_200_upload_becomes_db_rows_and_a_bad_reading_a_dead_letter(
    stack: Stack, gateway_for: Any
) -> None:
    stack.consumer().start()
    gw = gateway_for()
    good = [reading(f"E2E-{i % 7}", i, userId=500 + i % 7) for i in range(60)]
    bodies = [orjson.dumps({"data": good[i : i + 3], "orgId": 9}) for i in range(0, 60, 3)]
    bad = orjson.dumps({"data": [reading("E2E-BAD", 100), reading("E2E-BAD", 101, stress=-5)]})
    for body in [*bodies, bad]:
        status, _, answer = gw.post(body)
        assert status == 200, answer

    wait_for(lambda: stack.health_rows() >= 61, 120, what="61 rows")
    rows = stack.rows(
        "SELECT device_sn, timestamp, org_id, user_id FROM t_user_health_data ORDER BY id"
    )
    expected = {(r["deviceSn"], r["timestamp"]) for r in good} | {
        ("E2E-BAD", reading("E2E-BAD", 100)["timestamp"])
    }
    assert {(sn, ts.strftime("%Y-%m-%d %H:%M:%S")) for sn, ts, _, _ in rows} == expected
    assert {org for _, _, org, _ in rows if org is not None} == {9}
    dead = read_all(KAFKA, stack.dlq_topic, expected=1)
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert dead[0].key() == b"E2E-BAD"
    assert headers["error.reason"] == b"schema_violation"
    assert dead[0].value() == bad


def test_body_limit_tokens_and_unroutable_bodies_on_the_real_server(
    stack: Stack, gateway_for: Any
) -> None:
    gw = gateway_for(workers=1, GATEWAY_API_TOKENS=TOKEN, GATEWAY_MAX_BODY_BYTES="2048")
    body = orjson.dumps({"data": reading("LIM-A", 1)})
    assert gw.post(body)[0] == 401
    assert gw.post(body, **{"X-Api-Token": "nope-nope-nope-nope"})[0] == 401
    status, _, answer = gw.post(
        orjson.dumps({"data": [reading("LIM-A", 2)] * 8}), **{"X-Api-Token": TOKEN}
    )
    assert status == 413 and orjson.loads(answer)["status"] == "error"
    assert gw.post(b"{not json", **{"X-Api-Token": TOKEN})[0] == 400
    assert gw.post(b'{"data": {"heart_rate": 1}}', **{"X-Api-Token": TOKEN})[0] == 400
    assert gw.post(body, **{"X-Api-Token": TOKEN})[0] == 200
    messages = read_all(KAFKA, stack.topic, expected=1)
    assert [m.key() for m in messages] == [b"LIM-A"]
    assert gw.metric("health_gateway_requests_total", code="401") == 2
    assert gw.metric("health_gateway_requests_total", code="413") == 1


def test_no_200_before_the_broker_acked(private_kafka: PrivateKafka) -> None:
    topic = f"gw-ack-{uuid.uuid4().hex[:8]}"
    private_kafka.create_topic(topic)
    gw = GatewayProcess(
        {
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap,
            "GATEWAY_KAFKA_TOPIC": topic,
            "GATEWAY_DELIVERY_TIMEOUT_S": "120",
        }
    ).start()
    try:
        assert gw.post(orjson.dumps({"data": reading("ACK-A", 1)}))[0] == 200
        private_kafka.freeze()  # the broker holds every request: no ack can come
        result: dict[str, Any] = {}
        body = orjson.dumps({"data": reading("ACK-A", 2)})
        sender = threading.Thread(target=lambda: result.update(r=gw.post(body)))
        sender.start()
        wait_for(lambda: gw.metric("health_gateway_requests_in_flight") == 1, 60, what="in flight")
        assert sender.is_alive() and "r" not in result  # still waiting for the ack
        private_kafka.thaw()
        sender.join(150)
        assert result["r"][0] == 200
        keys = [m.key() for m in read_all(private_kafka.bootstrap, topic, expected=2)]
        assert keys == [b"ACK-A", b"ACK-A"]
    finally:
        private_kafka.thaw()
        gw.stop()


def test_kafka_outage_gives_503s_and_loses_nothing_answered_200(
    private_kafka: PrivateKafka,
) -> None:
    topic = f"gw-outage-{uuid.uuid4().hex[:8]}"
    private_kafka.create_topic(topic)
    gw = GatewayProcess(
        {
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap,
            "GATEWAY_KAFKA_TOPIC": topic,
            "GATEWAY_WORKERS": "2",
            "GATEWAY_DELIVERY_TIMEOUT_S": "5",
            "GATEWAY_KAFKA_CHECK_INTERVAL_S": "0.5",
        }
    ).start()
    answered: dict[str, int] = {}
    retry_after: set[str] = set()
    stop = threading.Event()

    def send() -> None:
        i = 0
        deadline = time.monotonic() + 400  # bounded even if the test fails midway
        while not stop.is_set() and time.monotonic() < deadline:
            sn = f"OUT-{i % 20}"
            payload = reading(sn, i)
            status, headers, _ = gw.post(orjson.dumps({"data": payload}), timeout=30)
            answered[f"{sn}|{payload['timestamp']}"] = status
            if status == 503:
                retry_after.add(headers.get("retry-after", ""))
            i += 1

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: list(answered.values()).count(200) >= 20, 60, what="200s before")
        private_kafka.kill()
        wait_for(lambda: list(answered.values()).count(503) >= 5, 120, what="503s")
        assert gw.get("/readyz")[0] == 503
        before = list(answered.values()).count(200)
        private_kafka.start()
        wait_for(lambda: list(answered.values()).count(200) >= before + 20, 180, what="200s after")
    finally:
        stop.set()
        sender.join(60)
        gw.stop()
    accepted = {k for k, v in answered.items() if v == 200}
    assert set(answered.values()) <= {200, 503}
    assert retry_after == {"5"}
    stored = {
        f"{r.device_sn}|{r.timestamp:%Y-%m-%d %H:%M:%S}"
        for m in read_all(private_kafka.bootstrap, topic, expected=len(accepted))
        for r in decode_message(m.value()).records
    }
    assert accepted - stored == set(), f"{len(accepted - stored)} uploads answered 200 were lost"


def _one_device_upload(sn: str, record_bytes: int) -> bytes:
    """A one-device upload whose Kafka record (key + value) is exactly `record_bytes`."""
    empty = orjson.dumps({"data": reading(sn, 1, note="")})
    pad = record_bytes - len(empty) - len(sn)
    return orjson.dumps({"data": reading(sn, 1, note="x" * pad)})


def test_an_upload_kafka_cannot_take_is_a_413_never_a_503(stack: Stack, gateway_for: Any) -> None:
    """Issue 17 B2, through the real process on the real broker with default limits: the
    producer takes 1,000,000-byte messages, the body limit is 1 MiB."""
    gw = gateway_for(workers=1)
    limit = 1_000_000 - 64  # gateway.limits: message.max.bytes minus librdkafka's framing
    for size, expected in ((limit - 1, 200), (limit, 200), (limit + 1, 413), (1_048_000, 413)):
        status, headers, body = gw.post(_one_device_upload(f"BIG-{size}", size))
        assert status == expected, (size, body[:200])
        if status == 413:
            assert "retry-after" not in headers
            assert b"message.max.bytes=1000000" in body
    stored = read_all(KAFKA, stack.topic, expected=2)
    assert sorted(len(m.value()) + len(m.key()) for m in stored) == [limit - 1, limit]
    assert gw.metric("health_gateway_produce_errors_total") == 0  # Kafka is not blamed
    log = gw.log_path.read_text()
    assert "GATEWAY_MAX_BODY_BYTES=1048576" in log and "message.max.bytes=1000000" in log


def test_a_dead_worker_is_replaced_and_sigterm_stops_all_with_exit_0(
    stack: Stack, gateway_for: Any
) -> None:
    import psutil

    gw = gateway_for(workers=2)
    assert gw.proc is not None
    supervisor = psutil.Process(gw.proc.pid)
    first = {p.pid for p in supervisor.children()}
    assert len(first) == 2
    psutil.Process(min(first)).kill()
    wait_for(
        lambda: len({p.pid for p in supervisor.children()} - first) == 1,
        30,
        what="a new worker",
    )
    assert gw.post(orjson.dumps({"data": reading("SUP-1", 1)}))[0] == 200
    assert gw.stop() == 0
    assert "gateway worker exited: starting another" in gw.log_path.read_text()
