"""The normalized output topic end to end: the real process, broker, DB and Redis.

Every stored reading is published once per batch, keyed by its SN, in the published
schema; a dead-lettered message publishes nothing; offsets are committed after.
"""

from __future__ import annotations

import datetime as dt

import jsonschema
import orjson
import pytest

from consumer.sinks.normalized import json_schema
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def reading(sn: str, second: int, heart_rate: int = 70) -> dict[str, object]:
    ts = dt.datetime(2025, 6, 1, 8, 0, 0) + dt.timedelta(seconds=second)
    return {"deviceSn": sn, "heart_rate": heart_rate, "timestamp": f"{ts:%Y-%m-%d %H:%M:%S}"}


def test_each_stored_reading_is_published_keyed_by_sn(stack: Stack) -> None:
    topic = f"{stack.topic}.normalized"
    messages = [
        (f"N-{i % 5}".encode(), orjson.dumps({"data": reading(f"N-{i % 5}", i)}), [])
        for i in range(30)
    ]
    watch = [reading("N-W", 100 + s) for s in range(3)]
    messages.append((b"N-W", orjson.dumps({"data": watch}), []))
    messages.append((b"N-0", b"{not json", []))  # dead-lettered: nothing published
    stack.produce(messages)
    proc = stack.consumer(NORMALIZED_TOPIC=topic, BATCH_MAX_WAIT_MS="50").start()
    try:
        wait_for(lambda: stack.health_rows() == 33, 60, what="33 stored readings")
        wait_for(stack.committed_all, 30, what="offsets committed")
        out = stack.read_topic(topic, 33)
        assert proc.metric("health_consumer_records_written_total{sink=normalized}") == 33
        assert stack.partitions_of(topic) == stack.partitions  # keyed like the source
    finally:
        stack.admin.delete_topics([topic])
    values = [orjson.loads(m.value()) for m in out]
    assert len(values) == 33
    assert all(m.key().decode() == v["sn"] for m, v in zip(out, values, strict=True))
    for value in values:
        jsonschema.validate(value, json_schema())
    stored = {
        (str(sn), f"{ts:%Y-%m-%d %H:%M:%S}")
        for sn, ts in stack.rows("SELECT device_sn, `timestamp` FROM t_user_health_data")
    }
    assert {(v["sn"], v["ts"]) for v in values} == stored
