"""Issue 18 through the real process: one reading, one meaning, in every store.

Each test names the case of the issue it holds (S1, S2, ...); the rules are written in
docs/legacy-compatibility.md ("One reading, one meaning").
"""

from __future__ import annotations

import orjson
import pytest

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
