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


def committed_all(stack: Stack) -> bool:
    end = stack.end_offsets()
    return all(stack.committed().get(p) == e for p, e in end.items() if e > 0)


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
    wait_for(lambda: stack.health_rows() == 2 and committed_all(stack), 60, what="2 rows")
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
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max,"
            " trend_duration, severity_level, alert_message, customer_id) VALUES "
            "('heart_rate_high', 'heart_rate', 40, 150, 1, 'critical', 'Heart rate high', 0)"
        )

    def reading(ts: str, hr: int, workout: str) -> dict[str, object]:
        return {"deviceSn": sn, "heart_rate": hr, "timestamp": ts, "workoutData": workout}

    t1, t2 = "2025-06-08 08:00:00", "2025-06-08 08:05:00"
    first = [reading(t1, 60, '{"w":"A1"}'), reading(t1, 180, '{"w":"B1"}')]
    proc = stack.consumer(**FAST).start()
    stack.produce([(sn.encode(), orjson.dumps({"data": first}), [])])
    stack.produce([(sn.encode(), orjson.dumps({"data": reading(t2, 60, '{"w":"A2"}')}), [])])
    wait_for(lambda: stack.health_rows() == 2 and committed_all(stack), 60, what="2 rows")
    stack.produce([(sn.encode(), orjson.dumps({"data": reading(t2, 181, '{"w":"B2"}')}), [])])
    wait_for(lambda: committed_all(stack), 60, what="the later duplicate committed")

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
    wait_for(lambda: committed_all(stack), 60, what="the message committed")
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
    wait_for(lambda: committed_all(stack), 60, what="both messages committed")
    rows = stack.rows("SELECT `timestamp` FROM t_user_health_data ORDER BY 1")
    assert [f"{r[0]:%Y-%m-%d %H:%M:%S}" for r in rows] == [now, "2025-06-09 09:00:00"]
    letters = stack.read_topic(stack.dlq_topic, 1)
    headers = {k: (v or b"").decode() for k, v in letters[0].headers() or []}
    assert headers["error.reason"] == "future_timestamp"
    assert "2099-01-01 00:00:00" in headers["error.detail"]
    assert redis_client.hget(f"health_data:{sn}", "timestamp") == "2025-06-09 09:00:00"
    assert proc.terminate() == 0
