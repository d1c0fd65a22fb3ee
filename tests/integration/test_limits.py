"""Issue 17 (B1, B9, B10, B12, B13, Required 1): every limit is a tested boundary, through
real `health-consumer` processes against the real broker and database."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import NewTopic
from sqlalchemy import create_engine, text

from consumer.sinks.dlq import ORIGINAL_VALUE_BYTES, ORIGINAL_VALUE_SHA256, TRUNCATED_HEADER
from consumer.startup import dlq_bytes_needed
from tests.integration.stack import (
    DB_ROOT_URL,
    KAFKA,
    REDIS_URL,
    Stack,
    db_url,
    free_port,
    wait_for,
)

BINARY = str(Path(sys.executable).with_name("health-consumer"))
FAST = {"BATCH_MAX_WAIT_MS": "50", "LAG_SAMPLE_INTERVAL_S": "0.5"}


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_CLIENT_")}
    full = {"KAFKA_BOOTSTRAP_SERVERS": KAFKA, "DATABASE_URL": DB_ROOT_URL,
            "REDIS_URL": REDIS_URL, "HTTP_PORT": str(free_port()),
            "KAFKA_TOPIC": f"it-missing-{uuid.uuid4().hex[:8]}", **env}  # fmt: skip
    return subprocess.run(
        [BINARY, *args], env={**base, **full}, capture_output=True, text=True, timeout=timeout
    )


def reading(sn: str, second: int, **extra: object) -> dict[str, object]:
    ts = dt.datetime(2025, 6, 1, 8, 0, 0) + dt.timedelta(seconds=second)
    return {"deviceSn": sn, "heart_rate": 70, "blood_oxygen": 97, "upload_method": "wifi",
            "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), **extra}  # fmt: skip


def padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` as JSON of exactly `size` bytes (trailing whitespace is valid JSON)."""
    body = orjson.dumps(payload)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def committed_to(stack: Stack, end: dict[int, int]) -> bool:
    committed = stack.committed()
    return all(committed.get(p) == offset for p, offset in end.items() if offset > 0)


def headers_of(msg: Any) -> dict[str, bytes]:
    return {name: bytes(value or b"") for name, value in msg.headers() or []}


# ------------------------------------------------------------------------------ B12, B13


CONFIG_MISTAKES = [
    ("DATABASE_URL", {"DATABASE_URL": "mysql://root@127.0.0.1:3306/health"}),
    ("DATABASE_URL", {"DATABASE_URL": "mysql+mysqldb://root@127.0.0.1:3306/health"}),
    ("DATABASE_URL", {"DATABASE_URL": "mysql+pymysql://root:pw@127.0.0.1:33o6/health"}),
    ("REDIS_URL", {"REDIS_URL": "redis://127.0.0.1:63x9/0"}),
    ("REDIS_URL", {"REDIS_URL": "127.0.0.1:6379"}),
    ("KAFKA_CLIENT_SESION_TIMEOUT_MS", {"KAFKA_CLIENT_SESION_TIMEOUT_MS": "10000"}),
    ("KAFKA_CLIENT_SESSION_TIMEOUT_MS", {"KAFKA_CLIENT_SESSION_TIMEOUT_MS": "ten"}),
    ("KAFKA_CLIENT_ACKS", {"KAFKA_CLIENT_ACKS": "1"}),
    ("KAFKA_CLIENT_ENABLE_IDEMPOTENCE", {"KAFKA_CLIENT_ENABLE_IDEMPOTENCE": "false"}),
    ("HTTP_HOST", {"HTTP_HOST": "http://0.0.0.0"}),
    ("HTTP_HOST", {"HTTP_HOST": "192.0.2.1"}),  # TEST-NET: not an address of this host
]


@pytest.mark.parametrize(("variable", "env"), CONFIG_MISTAKES, ids=lambda v: str(v)[:40])
def test_config_mistakes_exit_2_with_one_line_naming_the_variable(
    variable: str, env: dict[str, str]
) -> None:
    result = run_cli("run", **env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and variable in lines[0] and "Traceback" not in result.stderr
    assert "pw@" not in result.stderr  # the URL's password is never echoed


def test_http_port_in_use_exits_2_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = run_cli("run", HTTP_PORT=str(port))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "HTTP_PORT" in lines[0] and f"127.0.0.1:{port} is already in use" in lines[0]


def test_migrate_with_the_database_down_exits_2_naming_it() -> None:
    closed = free_port()  # nothing listens there: MariaDB "down" without stopping it
    result = run_cli("migrate", DATABASE_URL=f"mysql+pymysql://root@127.0.0.1:{closed}/health")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("health-consumer: DATABASE_URL:")
    assert "Can't connect" in lines[0]


@pytest.mark.parametrize("command", ["run", "migrate"])
def test_an_unknown_database_is_a_clear_error_not_an_outage(command: str) -> None:
    name = f"hs_missing_{uuid.uuid4().hex[:8]}"
    result = run_cli(command, DATABASE_URL=db_url(name), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines[-1].startswith("health-consumer: DATABASE_URL:")
    assert f"Unknown database '{name}'" in lines[-1]


@pytest.mark.parametrize(
    ("horizon_s", "accepted"), [(122_160, True), (122_220, True), (122_221, False)]
)
def test_partitions_ahead_at_the_limit_through_the_real_process(
    horizon_s: int, accepted: bool
) -> None:
    """PARTITION_MINUTES=1 with these horizons asks for 2,047, 2,048 (MAX_PARTITIONS_AHEAD)
    and 2,049 time partitions ahead. Accepted settings go on to the database, which does
    not exist here (exit 2 naming DATABASE_URL); refused ones stop at the settings."""
    name = f"hs_missing_{uuid.uuid4().hex[:8]}"
    result = run_cli(
        "run",
        DATABASE_URL=db_url(name),
        PARTITION_MINUTES="1",
        FUTURE_TIMESTAMP_HORIZON_S=str(horizon_s),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    if accepted:
        assert f"Unknown database '{name}'" in lines[-1]
    else:
        assert len(lines) == 1 and "PARTITION_MINUTES=1" in lines[0]
        assert "needs 2049 time partitions ahead, over 2048" in lines[0]


# ------------------------------------------------------------------------------ B1


@pytest.fixture
def small_stack() -> Iterator[Stack]:
    from tests.integration.stack import drop_stack, make_stack

    s = make_stack(partitions=2)
    try:
        yield s
    finally:
        drop_stack(s)


def big_producer() -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": KAFKA, "message.max.bytes": 3_000_000,
                     "enable.idempotence": True})  # fmt: skip


def raise_topic_limit(stack: Stack, limit: int) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    entry = ConfigEntry("max.message.bytes", str(limit),
                        incremental_operation=AlterConfigOpType.SET)  # fmt: skip
    res = ConfigResource("TOPIC", stack.topic, incremental_configs=[entry])
    for future in stack.admin.incremental_alter_configs([res]).values():
        future.result(30)


def test_oversized_dead_letters_are_truncated_acknowledged_and_refused_by_replay(
    small_stack: Stack,
) -> None:
    stack = small_stack
    raise_topic_limit(stack, 3_000_000)  # as the README advises for bigger uploads
    huge_reading = reading("SN-BIG", 2, workoutData="w" * 999_000)
    cases: list[tuple[bytes, bytes]] = [
        (b"SN-OK", orjson.dumps({"data": [reading("SN-OK", 1)]})),
        (b"SN-X", b"\xfe" * 1_010_000),  # non-JSON, under MAX_MESSAGE_BYTES
        (b"K" * 999_000, orjson.dumps({"data": [reading("SN-KEY", 1)]})),  # 999 kB key
        (b"SN-Y", b"{" + b" " * 1_499_999),  # over MAX_MESSAGE_BYTES on the raised topic
        (b"SN-BIG", orjson.dumps({"data": [huge_reading, reading("Q'uote", 3)]})),
        (b"SN-OK2", orjson.dumps({"data": [reading("SN-OK2", 1)]})),
    ]
    producer = big_producer()
    for key, value in cases:
        producer.produce(stack.topic, key=key, value=value, partition=0)
    assert producer.flush(30) == 0
    a = stack.consumer(**FAST).start()
    b = stack.consumer(**FAST).start()  # the partition's next owner, had `a` died
    end = stack.end_offsets()
    wait_for(lambda: stack.committed().get(0) == end[0], 120, what="partition 0 committed")
    assert a.proc is not None and a.proc.poll() is None and a.get("/livez")[0] == 200
    assert b.proc is not None and b.proc.poll() is None
    sns = {r[0] for r in stack.rows("SELECT DISTINCT device_sn FROM t_user_health_data")}
    assert {"SN-OK", "SN-OK2"} <= sns
    letters = stack.read_topic(stack.dlq_topic, 4, timeout=60)
    by_sha = {headers_of(m).get(ORIGINAL_VALUE_SHA256): m for m in letters}
    for key, value in cases[1:5]:
        if len(key) + len(value) < 990_000:
            continue  # small enough to travel whole (the 999 kB key one is not)
        letter = by_sha.get(hashlib.sha256(value).hexdigest().encode())
        assert letter is not None, f"no truncated letter for the {len(value)}-byte message"
        h = headers_of(letter)
        assert h[TRUNCATED_HEADER] == b"true" and int(h[ORIGINAL_VALUE_BYTES]) == len(value)
        assert len(letter.value() or b"") + len(letter.key() or b"") < 1_000_000
    assert (
        a.metric("health_consumer_dead_letters_total")
        + b.metric("health_consumer_dead_letters_total")
        >= 4
    )
    truncated = sum(1 for m in letters if TRUNCATED_HEADER in headers_of(m))
    reasons = {headers_of(m)["error.reason"].decode() for m in letters}
    args = ["dlq", "replay", "--format", "json", "--quiet"]
    for reason in sorted(reasons):
        args += ["--reason", reason]
    result = run_cli(*args, KAFKA_TOPIC=stack.topic, DLQ_TOPIC=stack.dlq_topic)
    report = orjson.loads(result.stdout)
    assert result.returncode == 1 and report["refused"] == truncated >= 3
    assert report["sent"] == len(letters) - truncated
    assert any("refused, truncated dead letter" in e for e in report["errors"])


def test_with_both_limits_raised_a_large_dead_letter_travels_whole(small_stack: Stack) -> None:
    """The README's advice done right: DLQ producer and DLQ topic raised together, so a
    message over MAX_MESSAGE_BYTES is dead-lettered whole (and stays replayable)."""
    stack = small_stack
    raise_topic_limit(stack, 3_000_000)
    producer_max = 2_000_000
    topic = NewTopic(stack.dlq_topic, num_partitions=1, replication_factor=1,
                     config={"max.message.bytes": str(dlq_bytes_needed(producer_max))})  # fmt: skip
    stack.admin.create_topics([topic])[stack.dlq_topic].result(30)
    value = b"{" + b" " * 1_499_999  # over MAX_MESSAGE_BYTES (1 MiB)
    producer = big_producer()
    producer.produce(stack.topic, key=b"SN-W", value=value, partition=0)
    assert producer.flush(30) == 0
    stack.consumer(KAFKA_CLIENT_MESSAGE_MAX_BYTES=str(producer_max), **FAST).start()
    end = stack.end_offsets()
    wait_for(lambda: committed_to(stack, end), 60, what="committed to the end")
    (letter,) = stack.read_topic(stack.dlq_topic, 1, timeout=30)
    h = headers_of(letter)
    assert h["error.reason"] == b"message_too_large" and TRUNCATED_HEADER not in h
    assert letter.value() == value


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_message_bytes_boundary(small_stack: Stack, delta: int) -> None:
    stack, limit = small_stack, 4096
    value = padded({"data": [reading("SN-M", 1)]}, limit + delta)
    stack.produce([(b"SN-M", value, [])])
    proc = stack.consumer(MAX_MESSAGE_BYTES=str(limit), **FAST).start()
    end = stack.end_offsets()
    wait_for(lambda: committed_to(stack, end), 60, what="committed to the end")
    rows = stack.health_rows()
    letters = stack.read_topic(stack.dlq_topic, 1 if delta > 0 else 0, timeout=10)
    if delta > 0:
        assert rows == 0 and len(letters) == 1
        assert headers_of(letters[0])["error.reason"] == b"message_too_large"
    else:
        assert rows == 1 and letters == []
    assert proc.proc is not None and proc.proc.poll() is None


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_readings_per_message_boundary(small_stack: Stack, delta: int) -> None:
    stack, limit = small_stack, 5
    readings = [reading("SN-R", i) for i in range(limit + delta)]
    stack.produce([(b"SN-R", orjson.dumps({"data": readings}), [])])
    stack.consumer(MAX_READINGS_PER_MESSAGE=str(limit), **FAST).start()
    end = stack.end_offsets()
    wait_for(lambda: committed_to(stack, end), 60, what="committed to the end")
    letters = stack.read_topic(stack.dlq_topic, 1 if delta > 0 else 0, timeout=10)
    assert stack.health_rows() == (0 if delta > 0 else limit + delta)
    assert len(letters) == (1 if delta > 0 else 0)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_max_readings_per_message_against_batch_max_records(small_stack: Stack, delta: int) -> None:
    """A message is never split, so readings above BATCH_MAX_RECORDS overfill a batch:
    a warning naming both (not an error: a batch cap is soft)."""
    readings = str(100 + delta)
    proc = small_stack.consumer(BATCH_MAX_RECORDS="100", MAX_READINGS_PER_MESSAGE=readings,
                                **FAST).start()  # fmt: skip
    log = proc.log_path.read_text()
    warned = f"MAX_READINGS_PER_MESSAGE={readings} exceeds BATCH_MAX_RECORDS=100" in log
    assert warned == (delta > 0)


# ------------------------------------------------------------------------------ Required 1


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_dlq_topic_limit_against_the_dlq_producer(small_stack: Stack, delta: int) -> None:
    stack = small_stack
    limit = dlq_bytes_needed(1_000_000) + delta
    topic = NewTopic(stack.dlq_topic, num_partitions=1, replication_factor=1,
                     config={"max.message.bytes": str(limit)})  # fmt: skip
    stack.admin.create_topics([topic])[stack.dlq_topic].result(30)
    proc = stack.consumer(**FAST)
    if delta >= 0:
        proc.start()  # ready: the limits agree
        assert proc.get("/readyz")[0] == 200
        return
    proc.launch()
    assert proc.proc is not None
    assert proc.proc.wait(60) == 2
    log = proc.log_path.read_text()
    assert "KAFKA_CLIENT_MESSAGE_MAX_BYTES" in log and f"max.message.bytes={limit}" in log


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_db_pool_against_the_partitions_one_replica_can_own(stack: Stack, delta: int) -> None:
    # 12 partitions + 1 reserve = 13 connections; the pool has DB_POOL_SIZE + 4 overflow.
    pool = 13 - 4 + delta
    proc = stack.consumer(DB_POOL_SIZE=str(pool), **FAST).start()
    log = proc.log_path.read_text()
    warned = f"DB_POOL_SIZE={pool}" in log
    assert warned == (delta < 0)
    if warned:
        assert "12 partitions" in log


# ------------------------------------------------------------------------------ B9


def test_probes_answer_200_while_slow_header_clients_hold_every_slot(stack: Stack) -> None:
    proc = stack.consumer(HTTP_MAX_CONNECTIONS="8", HTTP_TIMEOUT_S="5").start()
    stop = threading.Event()

    def slow() -> None:  # one header byte a second, reconnecting when dropped
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
                    for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"s" * 100:
                        sock.sendall(bytes([byte]))
                        if stop.wait(1.0):
                            return
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(40)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        answers = []
        for i in range(24):
            answers.append(proc.get("/livez" if i % 2 else "/readyz", timeout=5)[0])
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert answers == [200] * 24


# ------------------------------------------------------------------------------ B10


def test_shutdown_with_a_hung_flush_ends_within_one_deadline_and_loses_nothing(
    small_stack: Stack,
) -> None:
    stack = small_stack
    proc = stack.consumer(SHUTDOWN_TIMEOUT_S="6", REVOKE_FLUSH_TIMEOUT_S="10", **FAST).start()
    locker = create_engine(stack.database_url).connect()
    try:
        locker.execute(text("LOCK TABLES t_user_health_data WRITE"))
        stack.produce([(f"SN-H{i}".encode(), orjson.dumps({"data": [reading(f"SN-H{i}", i)]}),
                        []) for i in range(20)])  # fmt: skip
        time.sleep(2)  # the workers are now blocked inside their flush
        assert proc.proc is not None
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(60)
        took = time.monotonic() - started
    finally:
        locker.execute(text("UNLOCK TABLES"))
        locker.close()
    # Before: 6 s drain, then close() waited REVOKE_FLUSH_TIMEOUT_S on the same workers again.
    assert took < 6 + 3, f"shutdown took {took:.1f}s against SHUTDOWN_TIMEOUT_S=6"
    assert stack.health_rows() == 0  # nothing was committed past the hung batch ...
    stack.consumer(**FAST).start()  # ... so the next owner writes every reading
    wait_for(lambda: stack.health_rows() == 20, 60, what="all 20 rows after restart")


def test_a_fatal_kafka_error_exits_non_zero(small_stack: Stack) -> None:
    stack = small_stack
    member = {"KAFKA_CLIENT_GROUP_INSTANCE_ID": f"static-{uuid.uuid4().hex[:6]}"}
    first = stack.consumer(**member, **FAST).start()
    stack.consumer(**member, **FAST).launch()  # same static member id: fences the first
    assert first.proc is not None
    code = first.proc.wait(90)
    assert code == 4
    assert "fatal Kafka error" in first.log_path.read_text()


def test_a_replica_started_with_mariadb_unreachable_waits_instead_of_exiting(
    small_stack: Stack,
) -> None:
    """A closed port stands in for MariaDB down (the shared server is never stopped)."""
    url = f"mysql+pymysql://root@127.0.0.1:{free_port()}/{small_stack.database}"
    proc = small_stack.consumer(DATABASE_URL=url, **FAST).launch()
    assert proc.proc is not None

    def state() -> tuple[int, Any] | None:
        try:
            return proc.get("/livez")[0], proc.json("/readyz")
        except OSError:
            return None

    def waiting(s: tuple[int, Any] | None) -> bool:
        return s is not None and s[1][0] == 503 and s[1][1]["dependencies"]["mysql"] is False

    wait_for(lambda: waiting(state()), 60, what="sidecar up, MySQL named down")
    time.sleep(3)  # several retries later it is still there, still waiting
    now = state()
    assert now is not None and now[0] == 200 and waiting(now)
    assert proc.proc.poll() is None
