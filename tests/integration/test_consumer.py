"""The consumer against real Kafka, MariaDB and Redis: effects, faults, scale-out."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis

from consumer.tools.simulate import ReadingGenerator, SimMessage
from schemas.decode import decode_message
from tests.integration.stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.integration


def sim_messages(n: int, *, seed: int, devices: int = 50, **kw: Any) -> list[SimMessage]:
    gen = ReadingGenerator(devices=devices, seed=seed, **kw)
    return [gen.next_message() for _ in range(n)]


def as_kafka(msgs: list[SimMessage]) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    return [
        (m.key, m.value, [("sim.invalid", m.invalid.encode())] if m.invalid else []) for m in msgs
    ]


def expected(msgs: list[SimMessage]) -> dict[str, Any]:
    """What the DB must hold, derived from the payloads themselves."""
    readings: set[tuple[str, dt.datetime]] = set()
    daily: set[tuple[str, dt.date]] = set()
    weekly: set[tuple[str, dt.date]] = set()
    latest: dict[str, dt.datetime] = {}
    for m in msgs:
        if m.invalid:
            continue
        for r in decode_message(m.value).records:
            readings.add((r.device_sn, r.timestamp))
            latest[r.device_sn] = max(latest.get(r.device_sn, r.timestamp), r.timestamp)
            if any((r.sleep_data, r.exercise_daily_data, r.workout_data, r.scientific_sleep_data)):
                daily.add((r.device_sn, r.timestamp.date()))
            if r.exercise_week_data:
                d = r.timestamp.date()
                weekly.add((r.device_sn, d - dt.timedelta(days=d.weekday())))
    return {"readings": readings, "daily": daily, "weekly": weekly, "latest": latest}


def wait_rows(stack: Stack, n: int, timeout: float = 120) -> None:
    wait_for(lambda: stack.health_rows() >= n, timeout, what=f"{n} rows")
    time.sleep(1.0)  # anything beyond n would be a duplicate: give it a moment to show
    assert stack.health_rows() == n


def wait_committed(stack: Stack, timeout: float = 60) -> None:
    """Every partition's committed offset reaches its end (empty partitions have none)."""
    end = stack.end_offsets()

    def done() -> bool:
        committed = stack.committed()
        return all(committed.get(p) == e for p, e in end.items() if e > 0)

    wait_for(done, timeout, what=f"committed == {end}")


def test_exactly_once_effect_and_replay(stack: Stack, redis_client: redis.Redis) -> None:
    msgs = sim_messages(3000, seed=101, array_ratio=0.15, slow_field_ratio=0.2)
    exp = expected(msgs)
    n = len(exp["readings"])
    stack.produce(as_kafka(msgs))
    proc = stack.consumer().start()
    wait_rows(stack, n)
    assert (
        stack.scalar(
            "SELECT COUNT(*) FROM (SELECT device_sn, timestamp FROM t_user_health_data "
            "GROUP BY device_sn, timestamp HAVING COUNT(*) > 1) d"
        )
        == 0
    )
    daily = {
        (sn, d) for sn, d in stack.rows("SELECT device_sn, date FROM t_user_health_data_daily")
    }
    weekly = {
        (sn, d)
        for sn, d in stack.rows("SELECT device_sn, week_start FROM t_user_health_data_weekly")
    }
    assert daily == exp["daily"] and len(daily) > 0
    assert weekly == exp["weekly"] and len(weekly) > 0
    wait_committed(stack)

    # Replay everything: the DB must not change, and the duplicates must be counted.
    stack.produce(as_kafka(msgs))
    wait_for(
        lambda: proc.metric("health_consumer_records_duplicate_total") >= n,
        120,
        what="duplicates counted",
    )
    assert stack.health_rows() == n
    assert proc.metric("health_consumer_records_written_total{sink=mysql}") == n

    # Redis holds each device's newest reading, even after the replay of older data.
    for sn, ts in exp["latest"].items():
        assert redis_client.hget(f"health_data:{sn}", "timestamp") == ts.strftime(
            "%Y-%m-%d %H:%M:%S"
        )
    assert proc.terminate() == 0


def test_redis_latest_never_moves_backwards(stack: Stack, redis_client: redis.Redis) -> None:
    sn = "CRFTQREPLAY00001"
    redis_client.delete(f"health_data:{sn}")

    def reading(ts: str, hr: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        payload = {"data": {"deviceSn": sn, "heart_rate": hr, "timestamp": ts}}
        return sn.encode(), orjson.dumps(payload), []

    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"health_data_channel:{sn}")
    stack.produce([reading("2025-06-01 10:00:00", 70), reading("2025-06-01 10:05:00", 75)])
    proc = stack.consumer().start()
    wait_rows(stack, 2)
    wait_for(lambda: redis_client.hget(f"health_data:{sn}", "heartRate") == "75", 30)
    # An older reading arriving late is stored in the DB but must not become "latest".
    stack.produce([reading("2025-06-01 09:00:00", 60)])
    wait_rows(stack, 3)
    time.sleep(0.5)
    latest = redis_client.hgetall(f"health_data:{sn}")
    assert latest["timestamp"] == "2025-06-01 10:05:00"
    assert latest["heartRate"] == "75" and latest["deviceSn"] == sn
    published = [
        m for m in iter(lambda: pubsub.get_message(timeout=0.5), None) if m["type"] == "message"
    ]
    assert published and all(m["data"] == sn for m in published)
    proc.terminate()


def test_heart_rate_and_spo2_rules_fire(stack: Stack, redis_client: redis.Redis) -> None:
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max,"
            " trend_duration, severity_level, alert_message, customer_id) VALUES "
            "('heart_rate_high', 'heart_rate', 40, 120, 3, 'critical', 'Heart rate high', 5),"
            "('spo2_low', 'blood_oxygen', 90, NULL, 1, 'warning', 'SpO2 low', 5)"
        )
    sn = "CRFTQALERT000001"
    heart = [130, 131, 132, 133, 80, 140, 141, 142, 0, 150]
    spo2 = [98, 98, 85, 0, 98, 98, 98, 98, 98, 98]
    base = dt.datetime(2025, 6, 2, 8, 0, 0)
    msgs = []
    for i, (hr, ox) in enumerate(zip(heart, spo2, strict=True)):
        ts = (base + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
        payload = {
            "data": {
                "deviceSn": sn,
                "heart_rate": hr,
                "blood_oxygen": ox,
                "timestamp": ts,
                "customerId": 5,
            }
        }
        msgs.append((sn.encode(), orjson.dumps(payload), []))
    pubsub = redis_client.pubsub()
    pubsub.subscribe("health_alert_channel")
    # One reading per message, but small batches: the trend must survive across batches.
    proc = stack.consumer(BATCH_MAX_RECORDS="2").start()
    stack.produce(msgs)
    wait_rows(stack, len(msgs))
    alerts = wait_for(
        lambda: (
            stack.rows(
                "SELECT alert_type, alert_timestamp, health_id, alert_status "
                "FROM t_alert_info ORDER BY alert_timestamp, alert_type"
            )
            if stack.scalar("SELECT COUNT(*) FROM t_alert_info") >= 3
            else None
        ),
        30,
        what="3 alerts",
    )
    # Run 1: 130,131,132,133 fires once at the third; run 2: 140,141,142 (+150 after an
    # unmeasured 0) fires once at the third; SpO2 85 fires once.
    assert [(a[0], a[1].minute) for a in alerts] == [
        ("heart_rate_high", 2),
        ("spo2_low", 2),
        ("heart_rate_high", 7),
    ]
    assert all(a[2] is not None and a[3] == "pending" for a in alerts)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.5)
        if m and m["type"] == "message":
            got.append(orjson.loads(m["data"]))
    assert sorted(g["alert_type"] for g in got) == [
        "heart_rate_high",
        "heart_rate_high",
        "spo2_low",
    ]
    assert proc.metric("health_consumer_health_alerts_fired_total{rule_type=heart_rate_high}") == 2
    proc.terminate()


def test_dead_letters_have_reasons_and_never_block(stack: Stack) -> None:
    msgs = sim_messages(1500, seed=202, invalid_ratio=0.1, array_ratio=0.1)
    extra = [
        (
            b"CRFTQ0000000BIG",
            orjson.dumps(
                {
                    "data": [
                        {
                            "deviceSn": "CRFTQ0000000BIG",
                            "timestamp": f"2025-06-01 00:{i // 60:02d}:{i % 60:02d}",
                        }
                        for i in range(1001)
                    ]
                }
            ),
            [("sim.invalid", b"too_many_readings")],
        ),
        # a value the contract accepts but the DB rejects: bisected out of its batch
        (
            b"CRFTQ0000000HRX",
            orjson.dumps(
                {
                    "data": {
                        "deviceSn": "CRFTQ0000000HRX",
                        "timestamp": "2025-06-01 00:00:00",
                        "heart_rate": 260,
                    }
                }
            ),
            [("sim.invalid", b"db_rejected")],
        ),
        (
            None,
            orjson.dumps(
                {
                    "data": {
                        "deviceSn": "CRFTQ0000NOKEY",
                        "heart_rate": 70,
                        "timestamp": "2025-06-01 00:00:00",
                    }
                }
            ),
            [],
        ),
    ]
    exp = expected(msgs)
    invalid = Counter(m.invalid for m in msgs if m.invalid)
    invalid.update(["too_many_readings", "db_rejected"])
    # A DBA-added constraint stricter than the contract: the DB rejects that one row.
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data ADD CONSTRAINT chk_hr CHECK (heart_rate < 250)"
        )
    stack.produce(as_kafka(msgs) + extra)
    proc = stack.consumer().start()
    wait_rows(stack, len(exp["readings"]) + 1)  # + the unkeyed one
    wait_committed(stack)
    dlq = stack.read_topic(stack.dlq_topic, sum(invalid.values()))
    reasons = Counter()
    for m in dlq:
        headers = dict(m.headers())
        for name in (
            "error.reason",
            "error.detail",
            "source.topic",
            "source.partition",
            "source.offset",
            "consumer.version",
        ):
            assert name in headers, name
        assert headers["source.topic"].decode() == stack.topic
        reasons[headers["error.reason"].decode()] += 1
    assert reasons == invalid
    assert proc.metric("health_consumer_unkeyed_messages_total") == 1
    assert (
        proc.metric("health_consumer_dead_letters_total{reason=key_mismatch}")
        == invalid["key_mismatch"]
    )
    proc.terminate()


def test_two_replicas_split_partitions(stack: Stack) -> None:
    msgs = sim_messages(4000, seed=303, devices=200)
    n = len(expected(msgs)["readings"])
    a = stack.consumer().start()
    b = stack.consumer().start()
    stack.produce(as_kafka(msgs))
    wait_rows(stack, n)
    wait_committed(stack)
    owned_a = a.metric("health_consumer_records_written_total{sink=mysql}")
    owned_b = b.metric("health_consumer_records_written_total{sink=mysql}")
    assert owned_a > 0 and owned_b > 0 and owned_a + owned_b == n
    assert a.terminate() == 0 and b.terminate() == 0


def test_kill9_mid_run_then_restart_loses_nothing(stack: Stack) -> None:
    msgs = sim_messages(20000, seed=404, devices=300)
    n = len(expected(msgs)["readings"])
    proc = stack.consumer(BATCH_MAX_RECORDS="200").start()
    producer = threading.Thread(target=stack.produce, args=(as_kafka(msgs),))
    producer.start()
    wait_for(lambda: stack.health_rows() > n // 4, 60, what="a quarter written")
    proc.kill9()
    producer.join()
    assert stack.health_rows() < n
    stack.consumer().start()
    wait_rows(stack, n, timeout=180)


def test_db_outage_mid_run_resumes_without_loss(stack: Stack) -> None:
    msgs = sim_messages(6000, seed=505, devices=100)
    n = len(expected(msgs)["readings"])
    proc = stack.consumer(DB_RETRY_MAX_BACKOFF_S="1").start()
    stack.produce(as_kafka(msgs[:2000]))
    wait_for(lambda: stack.health_rows() > 0, 60, what="first rows")
    services = str(ROOT / "scripts" / "services.sh")
    subprocess.run([services, "down", "mariadb"], check=True, timeout=120)
    try:
        stack.produce(as_kafka(msgs[2000:]))
        time.sleep(15)
        assert proc.proc is not None and proc.proc.poll() is None, "consumer must ride it out"
        assert proc.metric("health_consumer_db_retries_total") > 0
    finally:
        subprocess.run([services, "up", "mariadb"], check=True, timeout=300)
    stack.engine.dispose()
    wait_rows(stack, n, timeout=180)
    wait_committed(stack)
    assert proc.terminate() == 0


def test_sigterm_commits_exactly_what_was_flushed(stack: Stack) -> None:
    msgs = sim_messages(8000, seed=606, devices=100, array_ratio=0.0)
    stack.produce(as_kafka(msgs))
    proc = stack.consumer(BATCH_MAX_RECORDS="100").start()
    wait_for(lambda: stack.health_rows() > 500, 60)
    assert proc.terminate(timeout=40) == 0
    committed = stack.committed()
    stored = {
        (sn, ts) for sn, ts in stack.rows("SELECT device_sn, timestamp FROM t_user_health_data")
    }
    by_partition: dict[int, list[bool]] = {}
    for m in sorted(
        stack.read_topic(stack.topic, len(msgs)), key=lambda m: (m.partition(), m.offset())
    ):
        r = decode_message(m.value()).records[0]
        by_partition.setdefault(m.partition(), []).append((r.device_sn, r.timestamp) in stored)
    assert sum(len(v) for v in by_partition.values()) == len(msgs)
    for p, flags in by_partition.items():
        flushed = sum(flags)
        # Flushed messages form a prefix of the partition, and the commit is exactly its end.
        assert flags == [True] * flushed + [False] * (len(flags) - flushed), p
        assert committed[p] == (flushed if flushed else committed[p]), (p, committed[p], flushed)
        if flushed:
            assert committed[p] == flushed
    # Restart: whatever was not committed is re-read, and the total is exact.
    stack.consumer().start()
    wait_rows(stack, len(msgs))


def test_backpressure_pauses_instead_of_dropping(stack: Stack) -> None:
    msgs = sim_messages(6000, seed=707, devices=40)
    n = len(expected(msgs)["readings"])
    proc = stack.consumer(WORKER_QUEUE_MAX_RECORDS="200", BATCH_MAX_RECORDS="100").start()
    # Stall every flush: the test holds a write lock on the health table (reads block too,
    # so nothing below queries that table until the lock is released).
    locker = stack.engine.connect()
    locker.exec_driver_sql("LOCK TABLES t_user_health_data WRITE")
    try:
        stack.produce(as_kafka(msgs))
        wait_for(
            lambda: proc.metric("health_consumer_partition_pauses_total") > 0,
            60,
            what="a paused partition",
        )
        time.sleep(2)
        assert proc.proc is not None and proc.proc.poll() is None
        assert proc.metric("health_consumer_records_written_total{sink=mysql}") == 0
    finally:
        locker.exec_driver_sql("UNLOCK TABLES")
        locker.close()
    wait_rows(stack, n, timeout=180)
    wait_committed(stack)
    proc.terminate()


def test_run_refuses_an_unmigrated_database(stack: Stack) -> None:
    with stack.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "health-consumer"), "run"],
        env=stack.env(HTTP_PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "health-consumer migrate" in proc.stderr


def test_rebalances_mid_stream_lose_nothing_and_keep_latest_state(
    stack: Stack, redis_client: redis.Redis
) -> None:
    """Scale out, then in, while data flows: revoked partitions flush and commit on the way."""
    msgs = sim_messages(12000, seed=909, devices=200, array_ratio=0.05)
    exp = expected(msgs)
    n = len(exp["readings"])
    a = stack.consumer(BATCH_MAX_RECORDS="300").start()
    kafka_msgs = as_kafka(msgs)

    def paced() -> None:  # ~10 s of traffic, so both rebalances happen mid-stream
        for i in range(0, len(kafka_msgs), 600):
            stack.produce(kafka_msgs[i : i + 600])
            time.sleep(0.25)

    producer = threading.Thread(target=paced)
    producer.start()
    wait_for(lambda: stack.health_rows() > n // 5, 60, what="a fifth written")
    assert producer.is_alive()
    b = stack.consumer(BATCH_MAX_RECORDS="300").start()  # cooperative rebalance: A gives up some
    wait_for(
        lambda: b.metric("health_consumer_records_written_total{sink=mysql}") > 0,
        60,
        what="B writing",
    )
    assert producer.is_alive()
    assert a.terminate() == 0  # scale in: B takes over A's partitions
    producer.join()
    wait_rows(stack, n, timeout=180)
    wait_committed(stack)
    assert b.metric("health_consumer_rebalances_total{event=assign}") >= 2
    for sn, ts in exp["latest"].items():
        assert redis_client.hget(f"health_data:{sn}", "timestamp") == ts.strftime(
            "%Y-%m-%d %H:%M:%S"
        )
    assert b.terminate() == 0
