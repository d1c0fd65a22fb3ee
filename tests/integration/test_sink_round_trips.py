"""The sinks' round trips per flush, against the real MariaDB and Redis (issue 9).

At a steady 5,000 readings/s a replica flushes hundreds of small batches a second, so
every round trip a flush does not need costs CPU in three processes. These tests pin the
two removed ones (the pool's ping and its ROLLBACK after a commit) and the safety that
remains: a connection returned inside a transaction is still rolled back, and a Redis that
lost the latest-state script gets it back without publishing an alert twice.
"""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import orjson
import redis
from sqlalchemy import Connection, text

from consumer.health_alerts.rules import Alert, HealthRule
from consumer.sinks.mysql import MySQLSink, make_engine
from consumer.sinks.redis import ALERT_CHANNEL, RedisSink
from tests.integration.stack import REDIS_URL, Stack, db_url
from tests.records import make_record


def _session_counter(conn: Connection, name: str) -> int:
    row = conn.execute(text(f"SHOW SESSION STATUS LIKE '{name}'")).one()
    return int(row[1])


def test_a_flush_is_an_insert_and_a_commit_and_nothing_else(stack: Stack) -> None:
    engine = make_engine(db_url(stack.database), pool_size=1)
    sink = MySQLSink(engine)
    try:
        sink.write([make_record("RT-1", seconds=1)], [])  # opens the pooled connection
        with engine.connect() as conn:
            before = {n: _session_counter(conn, n)
                      for n in ("Com_rollback", "Com_commit", "Com_admin_commands")}  # fmt: skip
            conn.commit()
        for i in range(5):
            result = sink.write([make_record("RT-1", seconds=10 + i)], [])
            assert result.inserted == 1
        with engine.connect() as conn:
            after = {n: _session_counter(conn, n) for n in before}
            conn.commit()
        # One COMMIT per write (plus the probe's own); no ROLLBACK, no COM_PING.
        assert after["Com_commit"] - before["Com_commit"] == 5 + 1
        assert after["Com_rollback"] == before["Com_rollback"]
        assert after["Com_admin_commands"] == before["Com_admin_commands"]
    finally:
        engine.dispose()


def test_a_connection_returned_inside_a_transaction_is_rolled_back(stack: Stack) -> None:
    engine = make_engine(db_url(stack.database), pool_size=1)
    try:
        with engine.connect() as conn:  # not committed: the pool must roll it back
            conn.execute(
                text(
                    "INSERT INTO t_user_health_data (device_sn, customer_id, `timestamp`) "
                    "VALUES ('RT-OPEN', 0, '2025-01-01 00:00:00')"
                )
            )
        with engine.connect() as conn:  # the same pooled connection
            assert _session_counter(conn, "Com_rollback") >= 1
            count = conn.execute(
                text("SELECT COUNT(*) FROM t_user_health_data WHERE device_sn = 'RT-OPEN'")
            ).scalar_one()
            conn.commit()
        assert count == 0
    finally:
        engine.dispose()


def test_redis_reloads_a_lost_script_and_publishes_each_alert_once() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    sink = RedisSink(REDIS_URL, socket_timeout_s=2.0, retry_max_s=1.0)
    record = make_record("RT-NOSCRIPT", seconds=5, heart_rate=190)
    rule = HealthRule(
        id=1, rule_type="heart_rate", physical_sign="heart_rate", threshold_min=None,
        threshold_max=Decimal(150), trend_duration=0, severity_level="major",
        alert_message=None, customer_id=1001,
    )  # fmt: skip
    alert = Alert(rule=rule, record=record, value=190, field="heart_rate")
    pubsub = client.pubsub()
    pubsub.subscribe(ALERT_CHANNEL)
    received: list[bytes] = []
    done = threading.Event()

    def listen() -> None:
        for message in pubsub.listen():
            if message["type"] == "message":
                received.append(message["data"])
            if done.is_set():
                return

    try:
        client.delete("health_data:RT-NOSCRIPT")
        assert pubsub.get_message(timeout=2.0) is not None  # the subscribe confirmation
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        client.script_flush()  # what a restarted or flushed server looks like
        result = sink.update([record], [alert])
        assert (result.updated, result.alerts_published, result.skipped) == (1, 1, False)
        assert client.hget("health_data:RT-NOSCRIPT", "heartRate") == b"190"
        done.set()
        client.publish(ALERT_CHANNEL, b"end")  # wakes the listener
        listener.join(5)
        alerts = [m for m in received if m != b"end"]
        assert len(alerts) == 1
        assert orjson.loads(alerts[0])["device_sn"] == "RT-NOSCRIPT"
        assert (
            dt.datetime.strptime(orjson.loads(alerts[0])["alert_timestamp"], "%Y-%m-%d %H:%M:%S")
            == record.timestamp
        )
    finally:
        pubsub.close()
        sink.close()
        client.delete("health_data:RT-NOSCRIPT")
        client.close()
