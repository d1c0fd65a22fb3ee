"""Issue 17 B8 through the real process: the "rules never loaded" guard survives a
rules-changed message.

Before: an `alert_rules_channel` message before the first load set the load time to
-1e18; the first flush then failed to load the rules (the table unreadable), took that
for a failed refresh and committed a heart rate of 180 with 0 alerts ("keeping 0 rules").
"""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

SN = "RULES-GUARD-01"


def test_a_rules_message_before_the_first_load_never_commits_without_alerts(
    stack: Stack, redis_client: redis.Redis
) -> None:
    stack.add_heart_rate_rule(150, trend=1, customer=0)
    proc = stack.consumer(BATCH_MAX_WAIT_MS="50").start()
    # No flush yet, so no rules loaded. The admin side edits rules; then the table cannot
    # be read when the first flush needs it.
    wait_for(lambda: redis_client.publish("alert_rules_channel", "update:0:1") > 0, 30)
    with stack.engine.begin() as conn:
        conn.exec_driver_sql("RENAME TABLE t_alert_rules TO t_alert_rules_away")
    reading = {"deviceSn": SN, "heart_rate": 180, "timestamp": "2025-06-05 08:00:00"}
    stack.produce([(SN.encode(), orjson.dumps({"data": reading}), [])])
    time.sleep(3)  # several flush attempts: none may commit the reading without its rules
    assert stack.health_rows() == 0
    assert all(o is None or o < 0 for o in stack.committed().values())

    with stack.engine.begin() as conn:
        conn.exec_driver_sql("RENAME TABLE t_alert_rules_away TO t_alert_rules")
    wait_for(lambda: stack.health_rows() == 1, 60, what="the reading, once rules load")
    wait_for(
        lambda: stack.scalar("SELECT COUNT(*) FROM t_alert_info WHERE device_sn = :sn", sn=SN) == 1,
        30,
        what="its alert",
    )
    assert proc.terminate() == 0
