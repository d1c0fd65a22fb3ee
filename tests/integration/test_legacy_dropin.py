"""Issue 8 end to end: a legacy ljwx database adopted by `migrate`, then real-shaped uploads
through `health-consumer run`; what lands is what the legacy bigscreen reads.

The same checks run on a fresh database (our migrations plus the binding tables).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine

from tests.integration.legacy import LEGACY_HEALTH, create_bindings, create_legacy
from tests.integration.stack import KAFKA, Stack, drop_stack, wait_for
from tests.unit.payloads import (
    EXERCISE_DAILY_DATA,
    EXERCISE_WEEK_DATA,
    SLEEP_DATA,
    WORKOUT_DATA,
    camel_reading,
    legacy_reading,
    watch_reading,
)

pytestmark = pytest.mark.integration

WATCH, PHONE, RELAYED, OLDFW, LOOSE = (
    "CRFTQ23409001890", "PHONE0000000002", "RELAY0000000003", "OLDFW0000000004",
    "UNBOUND00000009",
)  # fmt: skip
# sys_user id, SN, org; org ancestors: customer = first non-zero ancestor, else the org.
USERS = [(101, WATCH, 11), (102, PHONE, 12), (103, RELAYED, 11), (104, OLDFW, 13)]
ORGS = [(11, "0,1,11"), (12, "0"), (13, "0,3")]
BOUND = {WATCH: (1, 11, 101), PHONE: (12, 12, 102), RELAYED: (1, 11, 103),
         OLDFW: (3, 13, 104), LOOSE: (0, None, None)}  # fmt: skip
KAFKA_TS = dt.datetime(2025, 6, 3, 7, 30, 0)  # the message time of the timestamp-less reading
DAY = "2025-06-02"


def ts(minute: int) -> str:
    return f"{DAY} 10:{minute:02d}:00"


def uploads() -> list[tuple[str, Any, int | None]]:
    """(key SN, body, Kafka timestamp ms) as watches, phones and relays send them."""
    blank = {"customerId": "", "orgId": "", "userId": ""}
    no_ids = {
        k: v for k, v in camel_reading().items() if k not in ("customerId", "orgId", "userId")
    }
    return [
        # A watch: ids as empty strings, a high heart rate (rule fires), slow fields.
        (
            WATCH,
            {
                "data": [
                    watch_reading(
                        deviceSn=WATCH,
                        timestamp=ts(0),
                        heart_rate=130,
                        sleepData=SLEEP_DATA,
                        exerciseDailyData=EXERCISE_DAILY_DATA,
                        exerciseWeekData=EXERCISE_WEEK_DATA,
                        workoutData=WORKOUT_DATA,
                        **blank,
                    )
                ]
            },
            None,
        ),
        # The same watch, later, heart rate as a numeric string.
        (
            WATCH,
            {"data": watch_reading(deviceSn=WATCH, timestamp=ts(1), heart_rate="78", **blank)},
            None,
        ),
        # A phone relay: camelCase, no ids at all.
        (PHONE, {"data": {**no_ids, "deviceSn": PHONE, "timestamp": ts(2)}}, None),
        # A nested Bluetooth relay: {"data": {"data": [...]}}.
        (
            RELAYED,
            {
                "data": {
                    "data": [
                        {
                            **no_ids,
                            "deviceSn": RELAYED,
                            "timestamp": ts(3),
                            "uploadMethod": "bluetooth",
                        }
                    ]
                }
            },
            None,
        ),
        # Old firmware over 4G: pinyin names, uploadMethod 4g.
        (OLDFW, {"data": legacy_reading(id=OLDFW, cjsj=ts(4))}, None),
        # No timestamp: takes the Kafka message time (deterministic, so replays stay exact).
        (
            LOOSE,
            {"data": {"deviceSn": LOOSE, "heart_rate": 64}},
            int(KAFKA_TS.replace(tzinfo=dt.UTC).timestamp() * 1000),
        ),
        # A malformed slow field: the vitals are stored, the message is dead-lettered once.
        (
            LOOSE,
            {
                "data": {
                    "deviceSn": LOOSE,
                    "heart_rate": 66,
                    "timestamp": ts(5),
                    "sleepData": "{not json",
                }
            },
            None,
        ),
    ]


def migrate(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).with_name("health-consumer"))
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([binary, "migrate", *extra], env=env, capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip


def stack_on(url: str, engine: Engine) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    admin = AdminClient({"bootstrap.servers": KAFKA})
    topic = f"it-legacy-{suffix}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    return Stack(topic, f"{topic}.dlq", f"it-group-{suffix}", url.rsplit("/", 1)[1], engine,
                 admin, 3)  # fmt: skip


def produce(stack: Stack) -> None:
    producer = Producer({"bootstrap.servers": KAFKA, "partitioner": "murmur2_random"})
    for key, body, timestamp in uploads():
        extra = {"timestamp": timestamp} if timestamp is not None else {}
        producer.produce(stack.topic, key=key.encode(), value=orjson.dumps(body), **extra)
    assert producer.flush(30) == 0


def add_rules(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max,"
            " trend_duration, severity_level, level, alert_message, customer_id, is_deleted) VALUES"
            " ('heart_rate_high', 'heart_rate', 40, 120, 1, 'critical', 'major', 'HR high', 1, 0),"
            " ('hr_deleted', 'heart_rate', 40, 60, 1, 'critical', 'major', 'deleted', 1, 1),"
            " ('hr_other_customer', 'heart_rate', 40, 60, 1, 'warning', 'minor', 'c7', 7, 0)"
        )


@pytest.mark.parametrize("kind", ["adopted", "fresh"])
def test_legacy_bigscreen_reads_what_we_write(
    kind: str, database: tuple[str, Engine], redis_client: redis.Redis
) -> None:
    url, engine = database
    if kind == "adopted":
        create_legacy(engine)
        before = len(LEGACY_HEALTH)
    else:
        before = 0
    create_bindings(engine, USERS, ORGS)
    if kind == "adopted":
        assert "ALTER TABLE" in migrate(url, "--dry-run").stdout
        assert "adopted the legacy tables" in migrate(url).stdout
    else:
        migrate(url)
    assert "nothing to do" in migrate(url).stdout  # a second run changes nothing
    add_rules(engine)
    stack = stack_on(url, engine)
    try:
        produce(stack)
        proc = stack.consumer(LAG_SAMPLE_INTERVAL_S="0.5").start()
        new = 7
        # New rows only: adoption moved the legacy duplicates to _dup, so the table's
        # total is not `before + new` (check_rows accounts for the moved ones).
        wait_for(lambda: _count_new(stack) == new, 90, what="rows")
        check_rows(stack, kind, before)
        check_alerts(stack)
        check_slow_rows(stack)
        check_redis(redis_client)
        dlq = stack.read_topic(stack.dlq_topic, 1)
        reasons = [dict(m.headers())["error.reason"].decode() for m in dlq]
        assert reasons == ["invalid_slow_field"]
        proc.terminate()
    finally:
        drop_stack(stack)


def _count_new(stack: Stack) -> int:
    return int(
        stack.scalar("SELECT COUNT(*) FROM t_user_health_data WHERE timestamp >= '2025-06-01'")
    )


def check_rows(stack: Stack, kind: str, before: int) -> None:
    rows = {(r[0], r[1]): r[2:] for r in stack.rows(
        "SELECT device_sn, timestamp, customer_id, org_id, user_id, heart_rate, upload_method,"
        " is_deleted FROM t_user_health_data WHERE timestamp >= '2025-06-02'")}  # fmt: skip
    for (sn, _), values in rows.items():
        assert values[:3] == BOUND[sn], sn
        assert values[5] == 0  # is_deleted: legacy queries filter on it
    assert rows[(WATCH, dt.datetime(2025, 6, 2, 10, 1))][3] == 78  # a numeric string
    assert rows[(OLDFW, dt.datetime(2025, 6, 2, 10, 4))][4] == "esim"  # 4g
    assert rows[(PHONE, dt.datetime(2025, 6, 2, 10, 2))][4] == "wifi"
    assert rows[(RELAYED, dt.datetime(2025, 6, 2, 10, 3))][4] == "bluetooth"
    assert (LOOSE, KAFKA_TS) in rows  # no timestamp: the Kafka message time
    assert rows[(LOOSE, dt.datetime(2025, 6, 2, 10, 5))][3] == 66  # malformed slow field
    if kind == "adopted":  # nothing that was there before is lost (moved duplicates included)
        old = stack.scalar("SELECT COUNT(*) FROM t_user_health_data WHERE timestamp < '2025-06-01'")
        moved = stack.scalar("SELECT COUNT(*) FROM t_user_health_data_dup")
        assert old + moved == before


def check_alerts(stack: Stack) -> None:
    alerts = stack.rows(
        "SELECT a.device_sn, a.health_id, h.id, a.alert_status, a.status, a.level,"
        " a.severity_level, a.metric, a.value, a.unit, a.source, a.occur_at, a.customer_id,"
        " a.org_id, a.user_id FROM t_alert_info a LEFT JOIN t_user_health_data h"
        " ON h.device_sn = a.device_sn AND h.timestamp = a.alert_timestamp"
        " WHERE a.alert_timestamp >= '2025-06-01'"
    )
    assert len(alerts) == 1  # only the customer-1 live rule fires, only on the 130 reading
    (sn, health_id, row_id, alert_status, status, level, severity, metric, value, unit, source,
     occur_at, customer, org, user) = alerts[0]  # fmt: skip
    assert sn == WATCH and health_id == row_id is not None
    assert (alert_status, status, level, severity) == ("pending", "NEW", "major", "critical")
    assert (metric, Decimal(str(value)), unit, source) == ("heart_rate", Decimal(130), "bpm",
                                                           "server")  # fmt: skip
    assert occur_at == dt.datetime(2025, 6, 2, 10, 0)
    assert (customer, org, user) == BOUND[WATCH]


def check_slow_rows(stack: Stack) -> None:
    daily = stack.rows(
        "SELECT customer_id, org_id, user_id, sleep_data, exercise_daily_data, workout_data"
        " FROM t_user_health_data_daily WHERE device_sn = :sn AND date = :d", sn=WATCH, d=DAY,
    )  # fmt: skip
    assert len(daily) == 1
    assert daily[0][:3] == BOUND[WATCH]
    assert orjson.loads(daily[0][3]) == orjson.loads(SLEEP_DATA)
    assert orjson.loads(daily[0][5]) == orjson.loads(WORKOUT_DATA)
    weekly = stack.rows(
        "SELECT week_start, exercise_week_data FROM t_user_health_data_weekly"
        " WHERE device_sn = :sn",
        sn=WATCH,
    )
    assert [(w[0], orjson.loads(w[1])) for w in weekly] == [
        (dt.date(2025, 6, 2), orjson.loads(EXERCISE_WEEK_DATA))  # a Monday
    ]
    loose = stack.rows("SELECT COUNT(*) FROM t_user_health_data_daily WHERE device_sn = :sn",
                       sn=LOOSE)  # fmt: skip
    assert loose[0][0] == 0  # the malformed sleepData was not stored


def check_redis(client: redis.Redis) -> None:
    latest = client.hgetall(f"health_data:{WATCH}")
    assert latest == {
        "deviceSn": WATCH, "timestamp": ts(1), "heartRate": "78", "bloodOxygen": "98",
        "pressureHigh": "107", "pressureLow": "74", "temperature": "36.5", "stress": "35",
        "step": "3512", "distance": "2.4", "calorie": "140.5", "latitude": "22.543096",
        "longitude": "114.057865", "altitude": "12", "uploadMethod": "wifi",
        "customerId": "1", "customer_id": "1", "orgId": "11", "userId": "101",
        "sleepData": "", "exerciseDailyData": "", "exerciseDailyWeekData": "",
        "scientificSleepData": "", "workoutData": "",
    }  # fmt: skip
    loose = client.hgetall(f"health_data:{LOOSE}")
    assert loose["customerId"] == "0" and loose["orgId"] == "" and loose["userId"] == ""
    assert client.hget(f"health_data:{OLDFW}", "uploadMethod") == "esim"
