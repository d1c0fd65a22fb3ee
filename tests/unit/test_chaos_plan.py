"""The chaos harness's expectations agree with the contract (no services, no chaos run).

The harness plans what each message must become; `Expected.from_workload` decodes every
planned message with the reference decoder and reports where plan and contract differ. A
disagreement would make a chaos run fail on a correct consumer (or pass a wrong one).
"""

from __future__ import annotations

import datetime as dt

from consumer.tools.chaos_checks import Expected
from consumer.tools.chaos_workload import (
    ALERT_RULES,
    KEEPS_READING,
    TREND_RULE,
    Planned,
    WorkloadBuilder,
    WorkloadSpec,
)


def planned_workload() -> list[Planned]:
    spec = WorkloadSpec(seed=8, devices=20, readings=3000, poison_ratio=0.3)
    planned = WorkloadBuilder(spec).build()
    for offset, p in enumerate(planned):  # as if every message was delivered
        p.partition, p.offset = 0, offset
    return planned


def test_plan_and_reference_decoder_agree_on_every_kind() -> None:
    planned = planned_workload()
    kinds = {p.kind for p in planned}
    assert kinds >= KEEPS_READING  # the seed exercises every kind this test is about
    rule_types = [rule_type for rule_type, _, _ in ALERT_RULES] + [TREND_RULE[0]]
    expected = Expected.from_workload(planned, rule_types=rule_types)
    assert expected.disagreements == []


def test_issue_8_kinds_keep_their_reading() -> None:
    planned = planned_workload()
    for p in planned:
        if p.kind == "missing_timestamp":
            assert p.reasons == frozenset() and len(p.readings) == 1
            ts = p.readings[0][1]
            stamp = dt.datetime.fromtimestamp((p.timestamp_ms or 0) // 1000, dt.UTC)
            assert stamp.strftime("%Y-%m-%d %H:%M:%S") == ts and b'"timestamp"' not in p.value
        elif p.kind in KEEPS_READING:
            assert p.reasons == frozenset({"invalid_slow_field"}) and len(p.readings) == 1
        elif p.kind.startswith("f2_") or p.kind == "f3_customer_digits":
            assert p.readings == [] and p.reasons
