"""Issue 18 through the real process: one reading, one meaning, in every store.

Each test names the case of the issue it holds (S1, S2, ...); the rules are written in
docs/legacy-compatibility.md ("One reading, one meaning").
"""

from __future__ import annotations

import orjson
import pytest
import redis

from tests.integration.legacy import create_bindings
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

FAST = {"BATCH_MAX_WAIT_MS": "50"}


def test_s1_a_zero_customer_from_the_watch_is_filled_by_the_binding(stack: Stack) -> None:
    """The legacy firmware (Utils.getHealthInfo) sends customerId "0", orgId "", userId "":
    0 means unknown, so the binding in sys_user gives customer, org and user together."""
    sn = "S1WATCH000000001"
    create_bindings(stack.engine, [(201, sn, 21)], [(21, "0,5,21")])
    reading = {
        "deviceSn": sn,
        "heart_rate": 72,
        "timestamp": "2025-06-07 08:00:00",
        "customerId": "0",
        "orgId": "",
        "userId": "",
    }
    numeric = {**reading, "timestamp": "2025-06-07 08:01:00", "customerId": 0, "orgId": 0}
    stack.produce([(sn.encode(), orjson.dumps({"data": r}), []) for r in (reading, numeric)])
    proc = stack.consumer(**FAST).start()
    wait_for(lambda: stack.health_rows() == 2 and stack.committed_all(), 60, what="2 rows")
    rows = stack.rows("SELECT customer_id, org_id, user_id FROM t_user_health_data")
    assert {tuple(r) for r in rows} == {(5, 21, 201)}
    assert proc.terminate() == 0


def test_s3_the_first_reading_of_a_key_wins_in_every_store(
    stack: Stack, redis_client: redis.Redis
) -> None:
    """The same (SN, timestamp) twice with other values, inside one message and across
    batches: the first in offset order is the reading in the health row, the daily row,
    Redis and the alerts (a heart rate of 180 must not raise an alert linked to a row that
    shows 60)."""
    sn = "S3DEVICE00000001"
    stack.add_heart_rate_rule(150, trend=1, customer=0)

    def reading(ts: str, hr: int, workout: str) -> dict[str, object]:
        return {"deviceSn": sn, "heart_rate": hr, "timestamp": ts, "workoutData": workout}

    t1, t2 = "2025-06-08 08:00:00", "2025-06-08 08:05:00"
    first = [reading(t1, 60, '{"w":"A1"}'), reading(t1, 180, '{"w":"B1"}')]
    proc = stack.consumer(**FAST).start()
    stack.produce([(sn.encode(), orjson.dumps({"data": first}), [])])
    stack.produce([(sn.encode(), orjson.dumps({"data": reading(t2, 60, '{"w":"A2"}')}), [])])
    wait_for(lambda: stack.health_rows() == 2 and stack.committed_all(), 60, what="2 rows")
    stack.produce([(sn.encode(), orjson.dumps({"data": reading(t2, 181, '{"w":"B2"}')}), [])])
    wait_for(stack.committed_all, 60, what="the later duplicate committed")

    rows = stack.rows("SELECT `timestamp`, heart_rate FROM t_user_health_data ORDER BY 1")
    assert [r[1] for r in rows] == [60, 60]
    daily = stack.rows("SELECT workout_data FROM t_user_health_data_daily")
    assert [orjson.loads(r[0]) for r in daily] == [{"w": "A2"}]
    latest = redis_client.hgetall(f"health_data:{sn}")
    assert (latest["timestamp"], latest["heartRate"]) == (t2, "60")
    assert stack.scalar("SELECT COUNT(*) FROM t_alert_info") == 0
    assert proc.metric("health_consumer_records_duplicate_total") == 2
    assert proc.terminate() == 0


def test_s2_readings_without_timestamps_in_one_message_are_all_stored(stack: Stack) -> None:
    """A cache flush of three readings without a time: the message time, then one second
    more for each further one, so all three are stored (the legacy stored them all)."""
    sn = "S2DEVICE00000001"
    readings = [{"deviceSn": sn, "heart_rate": hr} for hr in (61, 62, 63)]
    stack.produce([(sn.encode(), orjson.dumps({"data": readings}), [])])
    proc = stack.consumer(**FAST).start()
    wait_for(stack.committed_all, 60, what="the message committed")
    rows = stack.rows("SELECT `timestamp`, heart_rate FROM t_user_health_data ORDER BY 1")
    assert [r[1] for r in rows] == [61, 62, 63]
    assert [(r[0] - rows[0][0]).total_seconds() for r in rows] == [0, 1, 2]
    assert proc.metric("health_consumer_records_duplicate_total") == 0
    assert proc.terminate() == 0


def test_s7_a_reading_dated_2099_is_dead_lettered_and_the_latest_state_moves_on(
    stack: Stack, redis_client: redis.Redis
) -> None:
    sn = "S7DEVICE00000001"
    now = "2025-06-09 08:00:00"
    far = {"deviceSn": sn, "heart_rate": 99, "timestamp": "2099-01-01 00:00:00"}
    stack.produce(
        [
            (sn.encode(), orjson.dumps({"data": [{**far, "timestamp": now}, far]}), []),
            (sn.encode(), orjson.dumps({"data": {**far, "timestamp": "2025-06-09 09:00:00"}}), []),
        ]
    )
    proc = stack.consumer(**FAST).start()
    wait_for(stack.committed_all, 60, what="both messages committed")
    rows = stack.rows("SELECT `timestamp` FROM t_user_health_data ORDER BY 1")
    assert [f"{r[0]:%Y-%m-%d %H:%M:%S}" for r in rows] == [now, "2025-06-09 09:00:00"]
    letters = stack.read_topic(stack.dlq_topic, 1)
    headers = {k: (v or b"").decode() for k, v in letters[0].headers() or []}
    assert headers["error.reason"] == "future_timestamp"
    assert "2099-01-01 00:00:00" in headers["error.detail"]
    assert redis_client.hget(f"health_data:{sn}", "timestamp") == "2025-06-09 09:00:00"
    assert proc.terminate() == 0


def two_devices_one_case(sn: str) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    out = []
    for device, hr in ((sn.lower(), 61), (sn.upper(), 62)):
        reading = {"deviceSn": device, "heart_rate": hr, "timestamp": "2025-06-10 08:00:00"}
        out.append((device.encode(), orjson.dumps({"data": reading}), []))
    return out


def test_s4_sns_that_differ_only_in_case_are_two_devices_everywhere(
    stack: Stack, redis_client: redis.Redis
) -> None:
    """Our schema compares device_sn byte for byte (utf8mb4_bin, migration 0004), as Kafka
    and Redis do: both devices' readings are stored, each in its own hash."""
    stack.produce(two_devices_one_case("s4-case-dev-01"))
    proc = stack.consumer(**FAST).start()
    wait_for(stack.committed_all, 60, what="both committed")
    rows = stack.rows("SELECT device_sn, heart_rate FROM t_user_health_data ORDER BY 2")
    assert [tuple(r) for r in rows] == [("s4-case-dev-01", 61), ("S4-CASE-DEV-01", 62)]
    for sn, hr in (("s4-case-dev-01", "61"), ("S4-CASE-DEV-01", "62")):
        assert redis_client.hget(f"health_data:{sn}", "heartRate") == hr
    assert proc.metric("health_consumer_records_duplicate_total") == 0
    assert proc.terminate() == 0


def test_s4_on_a_case_folding_table_the_second_device_is_dead_lettered(stack: Stack) -> None:
    """An adopted legacy table keeps its case-insensitive collation: the second device's
    reading cannot have a row of its own, so it is dead-lettered, never counted as a
    duplicate of another device's reading."""
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE t_user_health_data MODIFY device_sn VARCHAR(255) "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL"
        )
    stack.produce(two_devices_one_case("s4-fold-dev-01"))
    proc = stack.consumer(**FAST).start()
    wait_for(stack.committed_all, 60, what="both committed")
    # Two partitions, two workers: whichever device is written first keeps the row.
    stored = [r[0] for r in stack.rows("SELECT device_sn FROM t_user_health_data")]
    assert len(stored) == 1 and stored[0] in ("s4-fold-dev-01", "S4-FOLD-DEV-01")
    letters = stack.read_topic(stack.dlq_topic, 1)
    headers = {k: (v or b"").decode() for k, v in letters[0].headers() or []}
    assert {letters[0].key().decode(), stored[0]} == {"s4-fold-dev-01", "S4-FOLD-DEV-01"}
    assert headers["error.reason"] == "db_rejected"
    assert "differs only in case" in headers["error.detail"]
    assert proc.metric("health_consumer_records_duplicate_total") == 0
    assert proc.terminate() == 0


def test_s5_a_binding_matches_as_the_legacy_lookup_did(stack: Stack) -> None:
    """sys_user.device_sn in another case and with a trailing blank: the legacy lookup
    (MySQL's case-insensitive, PAD SPACE collation) found the user; so does ours."""
    create_bindings(stack.engine, [(301, "s5watch00000001 ", 31)], [(31, "0,6,31")])
    sn = "S5WATCH00000001"
    reading = {"deviceSn": sn, "heart_rate": 70, "timestamp": "2025-06-10 09:00:00"}
    stack.produce([(sn.encode(), orjson.dumps({"data": reading}), [])])
    proc = stack.consumer(**FAST).start()
    wait_for(lambda: stack.health_rows() == 1 and stack.committed_all(), 60, what="the row")
    row = stack.rows("SELECT customer_id, org_id, user_id FROM t_user_health_data")[0]
    assert tuple(row) == (6, 31, 301)
    assert proc.terminate() == 0


def test_s6_a_replica_with_another_zone_than_its_group_refuses_to_start(stack: Stack) -> None:
    """The zone of a group's fallback times travels in its committed offsets' metadata;
    a replica started with another DEVICE_TIMEZONE would store a re-read reading without a
    timestamp at another time, a second row: it exits 2 naming the variable instead."""
    sn = "S6DEVICE00000001"
    stack.produce([(sn.encode(), orjson.dumps({"data": {"deviceSn": sn, "heart_rate": 70}}), [])])
    utc = stack.consumer(**FAST, DEVICE_TIMEZONE="UTC").start()
    wait_for(lambda: stack.health_rows() == 1 and stack.committed_all(), 60, what="1 row")
    assert utc.terminate() == 0

    other = stack.consumer(**FAST, DEVICE_TIMEZONE="Asia/Shanghai").launch()
    assert other.proc is not None
    assert other.proc.wait(60) == 2
    log = other.log_path.read_text()
    assert "DEVICE_TIMEZONE=Asia/Shanghai" in log and "committed with UTC" in log
    again = stack.consumer(**FAST, DEVICE_TIMEZONE="UTC").start()  # the group's zone: fine
    assert again.terminate() == 0
    assert stack.health_rows() == 1
