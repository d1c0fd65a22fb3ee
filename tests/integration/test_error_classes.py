"""Issue 17 B4/B6 through the real process: every DB error class has one rule.

An error the server answers with (a trigger's SIGNAL 1644 here, as an adopted legacy table
may carry) is the row's fault: it is isolated and dead-lettered alone, the other readings
are stored, the partition moves on and /readyz keeps saying MySQL is up. The same row
meets the same fate alone at low load as inside a backlog.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

FAST = {"LAG_SAMPLE_INTERVAL_S": "0.5", "BATCH_MAX_WAIT_MS": "50"}
TRIGGER = """
CREATE TRIGGER refuse_bad BEFORE INSERT ON t_user_health_data FOR EACH ROW
BEGIN
  IF LEFT(NEW.device_sn, 8) = 'TRIG-BAD' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the legacy trigger';
  END IF;
END
"""


def message(sn: str, second: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    ts = dt.datetime(2025, 6, 1, 8, 0, 0) + dt.timedelta(seconds=second)
    reading = {"deviceSn": sn, "heart_rate": 70, "timestamp": f"{ts:%Y-%m-%d %H:%M:%S}"}
    return sn.encode(), orjson.dumps({"data": reading}), []


def dead_letters(stack: Stack, n: int) -> list[tuple[str, str]]:
    out = []
    for m in stack.read_topic(stack.dlq_topic, n):
        headers = {k: (v or b"").decode() for k, v in m.headers() or []}
        out.append((m.key().decode(), headers.get("error.reason", "")))
    return sorted(out)


@pytest.mark.parametrize("load_data", ["true", "false"], ids=["load_data", "insert"])
def test_a_trigger_refusal_is_the_rows_fault_alone_or_in_a_backlog(
    stack: Stack, load_data: str
) -> None:
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(TRIGGER)
    # A backlog: the bad reading among 40 good ones of other devices.
    backlog = [message(f"GOOD-{i % 8}", i) for i in range(40)]
    backlog.insert(17, message("TRIG-BAD-1", 17))
    stack.produce(backlog)
    proc = stack.consumer(DB_LOAD_DATA=load_data, **FAST).start()
    wait_for(lambda: stack.health_rows() == 40, 60, what="the good rows of the backlog")
    # Then alone, at low load: the same fate.
    stack.produce([message("TRIG-BAD-2", 99)])
    end = stack.end_offsets()
    wait_for(
        lambda: all(stack.committed().get(p) == e for p, e in end.items() if e > 0),
        60,
        what="committed == end",
    )
    assert dead_letters(stack, 2) == [("TRIG-BAD-1", "db_rejected"), ("TRIG-BAD-2", "db_rejected")]
    assert stack.health_rows() == 40
    status, ready = proc.json("/readyz")
    assert status == 200, ready
    assert proc.metric("health_consumer_dead_letters_total{reason=db_rejected}") == 2
    assert proc.terminate() == 0
