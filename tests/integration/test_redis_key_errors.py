"""Issue 17 B7 on the real Redis: an error Redis answers for one key is not an outage.

A legacy `health_data:{sn}` that is not a hash makes the compare-and-set fail with
WRONGTYPE. Before, the whole update was retried to the deadline, the breaker every worker
shares opened (Redis marked down) and every retry published the alerts again.
"""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
import redis

from consumer.health_alerts.rules import Alert, HealthRule
from consumer.sinks.redis import ALERT_CHANNEL, LATEST_KEY, RedisSink
from tests.integration.stack import REDIS_URL, Stack, wait_for
from tests.records import make_record

pytestmark = pytest.mark.integration

RULE = HealthRule(
    id=1, rule_type="heart_rate", physical_sign="heart_rate", threshold_min=None,
    threshold_max=Decimal(150), trend_duration=1, severity_level="major",
    alert_message=None, customer_id=1001,
)  # fmt: skip


def test_a_key_redis_refuses_is_skipped_alone_and_alerts_go_out_once(
    redis_client: redis.Redis,
) -> None:
    redis_client.set(LATEST_KEY.format("RK-LEGACY"), "a string, not a hash")
    states: list[bool] = []
    sink = RedisSink(
        REDIS_URL, socket_timeout_s=2.0, retry_max_s=1.0, on_status=lambda up, _e: states.append(up)
    )
    records = [
        make_record("RK-A", seconds=1),
        make_record("RK-LEGACY", seconds=1, heart_rate=190),
        make_record("RK-B", seconds=1),
    ]
    alerts = [Alert(RULE, records[1], 190, "heart_rate")]
    pubsub = redis_client.pubsub()
    pubsub.subscribe(ALERT_CHANNEL)
    assert pubsub.get_message(timeout=2.0) is not None  # the subscribe confirmation
    try:
        result = sink.update(records, alerts)

        assert (result.key_errors, result.skipped) == (1, False)
        # RK-A was applied before the script stopped at the bad key: its rerun is a no-op
        # of the compare-and-set, so it counts as stale, not updated.
        assert result.updated + result.stale == 2
        assert result.alerts_published == 1
        assert states == [True]  # never reported down
        for sn in ("RK-A", "RK-B"):
            assert redis_client.hget(LATEST_KEY.format(sn), "timestamp") is not None
        messages = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            m = pubsub.get_message(timeout=0.2)
            if m and m["type"] == "message":
                messages.append(m["data"])
        assert len(messages) == 1
        # The breaker is shut: the next batch is applied at once.
        later = sink.update([make_record("RK-A", seconds=9)], [])
        assert (later.updated, later.skipped) == (1, False)
    finally:
        pubsub.close()
        sink.close()


def test_through_the_real_process_redis_stays_up_and_the_alert_goes_out_once(
    stack: Stack, redis_client: redis.Redis
) -> None:
    stack.add_heart_rate_rule(150, trend=1, customer=0)
    redis_client.set(LATEST_KEY.format("RKP-LEGACY"), "a string, not a hash")
    pubsub = redis_client.pubsub()
    pubsub.subscribe(ALERT_CHANNEL)
    assert pubsub.get_message(timeout=2.0) is not None
    messages = []
    for i, (sn, hr) in enumerate((("RKP-A", 70), ("RKP-LEGACY", 190), ("RKP-B", 72))):
        reading = {"deviceSn": sn, "heart_rate": hr, "timestamp": f"2025-06-06 08:00:0{i}"}
        messages.append((sn.encode(), orjson.dumps({"data": reading}), []))
    stack.produce(messages)
    proc = stack.consumer(BATCH_MAX_WAIT_MS="50").start()
    try:
        wait_for(
            lambda: proc.metric("health_consumer_sink_refused_items_total{sink=redis}") >= 1, 60
        )
        wait_for(lambda: stack.health_rows() == 3, 30)
        status, body = proc.json("/readyz")
        assert status == 200, body
        assert (
            proc.metric("health_consumer_sink_skipped_batches_total{sink=redis}") == 0
        )  # no batch skipped
        alerts = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            m = pubsub.get_message(timeout=0.2)
            if m and m["type"] == "message":
                alerts.append(orjson.loads(m["data"])["device_sn"])
        assert alerts == ["RKP-LEGACY"]
        for sn in ("RKP-A", "RKP-B"):
            assert redis_client.hget(LATEST_KEY.format(sn), "timestamp") is not None
    finally:
        pubsub.close()
    assert proc.terminate() == 0
