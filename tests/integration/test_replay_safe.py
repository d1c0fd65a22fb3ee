"""Issue 18 R1-R3 through the real process: a replay is safe to repeat.

R1: the original message time travels with the dead letter and the replayed copy, so a
reading without a timestamp is stored at the same time again (a duplicate), not anew.
R2: a replayed copy that fails again for the same reason is dead-lettered once; the next
replay skips it instead of doubling the dead-letter topic on every run.
R3: time arguments that Kafka cannot use are refused with a clear error.
"""

from __future__ import annotations

import orjson
import pytest

from tests.integration.stack import Stack, wait_for
from tests.integration.test_dlq_tool import dlq_cli, dlq_json

pytestmark = pytest.mark.integration

SN = "R1DEVICE00000001"


def test_replaying_twice_stores_nothing_new_and_dead_letters_nothing_twice(stack: Stack) -> None:
    # One reading without a time (stored at the message time) and one invalid reading: the
    # message is stored in part and dead-lettered whole.
    body = {"data": [{"deviceSn": SN, "heart_rate": 70}, {"deviceSn": SN, "heart_rate": "x"}]}
    stack.produce([(SN.encode(), orjson.dumps(body), [])])
    proc = stack.consumer(BATCH_MAX_WAIT_MS="50").start()
    wait_for(lambda: stack.health_rows() == 1 and stack.committed_all(), 60, what="1 row")
    first_time = stack.rows("SELECT `timestamp` FROM t_user_health_data")[0][0]
    assert dlq_json(stack, "stats")["counts"] == {"schema_violation": 1}

    first = dlq_json(stack, "replay", "--reason", "schema_violation", expect_rc=0)
    assert first["delivered"] == 1
    wait_for(lambda: dlq_json(stack, "stats")["total"] == 2, 60, what="the copy's dead letter")
    wait_for(stack.committed_all, 60, what="the copy committed")
    # R1: the copy's reading without a time is the same reading (the original message
    # time), a duplicate: still one row, at the same time.
    assert [r[0] for r in stack.rows("SELECT `timestamp` FROM t_user_health_data")] == [first_time]
    # R2: replayed again, neither the entry nor its failed copy is sent: no third letter.
    for _ in range(2):
        again = dlq_json(stack, "replay", "--reason", "schema_violation", expect_rc=0)
        assert (again["sent"], again["skipped_failed_again"]) == (0, 2)
    assert dlq_json(stack, "stats")["total"] == 2
    assert stack.health_rows() == 1
    assert proc.terminate() == 0


@pytest.mark.parametrize("since", ["99999999d", "1969-12-31T23:59:59.999Z"])
def test_a_time_kafka_cannot_use_is_refused_with_a_clear_error(stack: Stack, since: str) -> None:
    result = dlq_cli(stack, "stats", "--since", since)
    assert result.returncode == 2
    assert "before 1970-01-01" in result.stderr
    assert "Traceback" not in result.stderr
