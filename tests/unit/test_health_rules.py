from decimal import Decimal

from consumer.health_alerts.rules import HealthRule, fire_alerts, rebuild_runs, trend_lookback
from tests.records import make_record


def rule(
    sign: str = "heart_rate",
    lo: str | None = "40",
    hi: str | None = "120",
    trend: int = 1,
    customer: int = 1001,  # tests.records.make_record's customer
    rule_id: int = 1,
) -> HealthRule:
    return HealthRule(
        id=rule_id,
        rule_type=f"{sign}_abnormal",
        physical_sign=sign,
        threshold_min=None if lo is None else Decimal(lo),
        threshold_max=None if hi is None else Decimal(hi),
        trend_duration=trend,
        severity_level="critical",
        alert_message=f"{sign} abnormal",
        customer_id=customer,
    )


def test_heart_rate_rule_fires_once_per_run_of_trend_duration() -> None:
    hr = [130, 131, 135, 140, 70, 125, 126, 127]
    records = [make_record(seconds=i, heart_rate=v) for i, v in enumerate(hr)]
    alerts, state = fire_alerts([rule(trend=3)], records, {})
    # first run of 4 violations fires once (at the 3rd), the second run of 3 fires once
    assert [a.record.heart_rate for a in alerts] == [135, 127]
    assert state[("CRFTQ23409001890", 1)] == 3


def test_trend_survives_across_batches() -> None:
    r = rule(trend=3)
    a1, s1 = fire_alerts([r], [make_record(seconds=0, heart_rate=150)], {})
    a2, s2 = fire_alerts([r], [make_record(seconds=1, heart_rate=151)], s1)
    a3, _ = fire_alerts([r], [make_record(seconds=2, heart_rate=152)], s2)
    assert (len(a1), len(a2), len(a3)) == (0, 0, 1)
    assert a3[0].description.startswith("heart_rate abnormal: heart_rate=152 outside [40, 120]")


def test_state_is_not_mutated_so_a_failed_flush_can_retry() -> None:
    state = {("X", 1): 2}
    fire_alerts([rule(trend=3)], [make_record("X", heart_rate=200)], state)
    assert state == {("X", 1): 2}


def test_spo2_low_fires_and_zero_means_not_measured() -> None:
    r = rule("blood_oxygen", lo="90", hi=None)
    records = [
        make_record(seconds=0, blood_oxygen=0),
        make_record(seconds=1, blood_oxygen=85),
    ]
    alerts, _ = fire_alerts([r], records, {})
    assert [a.value for a in alerts] == [85]


def test_unmeasured_reading_neither_fires_nor_breaks_a_run() -> None:
    r = rule(trend=2)
    records = [
        make_record(seconds=0, heart_rate=150),
        make_record(seconds=1, heart_rate=0),
        make_record(seconds=2, heart_rate=None),
        make_record(seconds=3, heart_rate=151),
    ]
    alerts, _ = fire_alerts([r], records, {})
    assert [a.record.heart_rate for a in alerts] == [151]


def test_in_range_reading_resets_the_run() -> None:
    r = rule(trend=2)
    records = [make_record(seconds=i, heart_rate=v) for i, v in enumerate([150, 80, 150, 80])]
    alerts, state = fire_alerts([r], records, {})
    assert alerts == []
    assert state == {}


def test_blood_pressure_rule_checks_either_value() -> None:
    r = rule("bloodPressure", lo="60", hi="140")
    records = [
        make_record(seconds=0, pressure_high=120, pressure_low=80),
        make_record(seconds=1, pressure_high=150, pressure_low=80),
        make_record(seconds=2, pressure_high=120, pressure_low=80),
        make_record(seconds=3, pressure_high=120, pressure_low=50),
    ]
    alerts, _ = fire_alerts([r], records, {})
    assert [(a.field, a.value) for a in alerts] == [("pressure_high", 150), ("pressure_low", 50)]


def test_customer_scoped_rule_and_open_bounds() -> None:
    scoped = rule("temperature", lo=None, hi="37.5", customer=42)
    mine = make_record(seconds=0, customer_id=42, temperature=Decimal("38.1"))
    other = make_record("OTHER", seconds=0, customer_id=7, temperature=Decimal("38.1"))
    alerts, _ = fire_alerts([scoped], [mine, other], {})
    assert [a.record.device_sn for a in alerts] == [mine.device_sn]


def test_devices_are_tracked_independently() -> None:
    r = rule(trend=2)
    records = [
        make_record("A", seconds=0, heart_rate=150),
        make_record("B", seconds=0, heart_rate=150),
        make_record("A", seconds=1, heart_rate=150),
    ]
    alerts, state = fire_alerts([r], records, {})
    assert [a.record.device_sn for a in alerts] == ["A"]
    assert state == {("A", 1): 2, ("B", 1): 1}


def test_sleep_step_calorie_distance_stress_signs() -> None:
    rules = [
        rule("sleep", lo="4", hi=None, rule_id=1),
        rule("step", lo=None, hi="30000", rule_id=2),
        rule("calorie", lo=None, hi="5000", rule_id=3),
        rule("distance", lo=None, hi="50000", rule_id=4),
        rule("stress", lo=None, hi="80", rule_id=5),
    ]
    rec = make_record(
        sleep=Decimal("3.5"),
        step=40000,
        calorie=Decimal("6000"),
        distance=Decimal("60000"),
        stress=90,
    )
    alerts, _ = fire_alerts(rules, [rec], {})
    assert sorted(a.rule.id for a in alerts) == [1, 2, 3, 4, 5]


def test_runs_rebuilt_from_stored_readings_fire_where_an_unbroken_worker_would() -> None:
    """Issue 17 B11: the state a new owner rebuilds from the stored history continues the
    run, so the alert falls on the same reading (the same alert key) as without a restart."""
    r = rule(trend=3)
    hr = [80, 130, 131, 132, 133, 70]
    records = [make_record(seconds=i, heart_rate=v) for i, v in enumerate(hr)]
    unbroken, _ = fire_alerts([r], records, {})
    rebuilt = rebuild_runs([r], records[:3], {})
    after_restart, _ = fire_alerts([r], records[3:], rebuilt)
    assert [a.record.timestamp for a in after_restart] == [a.record.timestamp for a in unbroken]
    assert rebuild_runs([r], records[:3], {}) == {("CRFTQ23409001890", 1): 2}


def test_the_lookback_covers_the_longest_run() -> None:
    assert trend_lookback([rule(trend=1)]) == 0
    assert trend_lookback([]) == 0
    assert trend_lookback([rule(trend=1), rule(trend=4, rule_id=2)]) == 6
