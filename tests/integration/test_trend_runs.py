"""Issue 17 B11 through the real process: a trend run survives a restart and a replay.

A rule that needs three consecutive violations must fire once per episode, at the third
violating reading, even when a replica stops after the second (a rebalance, a restart)
or a replacement replays readings already stored (kill -9 before the offsets commit).
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

SN = "TREND-RUN-0001"
BASE = dt.datetime(2025, 6, 3, 8, 0, 0)


def reading(minute: int, heart_rate: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    ts = BASE + dt.timedelta(minutes=minute)
    payload = {
        "data": {
            "deviceSn": SN,
            "heart_rate": heart_rate,
            "timestamp": f"{ts:%Y-%m-%d %H:%M:%S}",
            "customerId": 7,
        }
    }
    return SN.encode(), orjson.dumps(payload), []


def alerts(stack: Stack) -> list[str]:
    rows = stack.rows("SELECT alert_timestamp FROM t_alert_info ORDER BY alert_timestamp")
    return [f"{r[0]:%H:%M}" for r in rows]


def test_a_run_spanning_a_restart_fires_once_at_its_third_reading(stack: Stack) -> None:
    stack.add_heart_rate_rule(120, trend=3, customer=7)
    first = stack.consumer(BATCH_MAX_WAIT_MS="50").start()
    stack.produce([reading(0, 80), reading(1, 130), reading(2, 131)])  # a run of two
    wait_for(lambda: stack.health_rows() == 3 and stack.committed_all(), 60, what="3 rows")
    assert first.terminate() == 0  # the partition goes to another replica (a restart)

    second = stack.consumer(BATCH_MAX_WAIT_MS="50").start()
    stack.produce([reading(3, 132), reading(4, 133), reading(5, 70)])
    wait_for(lambda: stack.health_rows() == 6 and stack.committed_all(), 60, what="6 rows")
    assert alerts(stack) == ["08:03"]  # the third violation, not the fifth reading
    second.kill9()

    # A replay of everything (a group that starts from the beginning, every reading
    # already stored): the alert is recomputed at the same reading, with the same key.
    with stack.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM t_alert_info")
    proc = stack.consumer(BATCH_MAX_WAIT_MS="50", KAFKA_GROUP_ID=stack.group + "-replay").start()
    wait_for(lambda: alerts(stack) == ["08:03"], 60, what="the replayed episode's alert")
    assert stack.health_rows() == 6
    assert proc.terminate() == 0
