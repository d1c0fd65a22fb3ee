from consumer.observe.health import (
    Band,
    HealthInputs,
    HealthThresholds,
    Status,
    dependency_status,
    judge,
    worst,
)
from consumer.observe.lag import LagStatus

OK_DEPS = {"kafka": True, "mysql": True, "redis": True}


def inputs(**overrides: object) -> HealthInputs:
    values: dict[str, object] = {
        "error_rate": 0.0,
        "process_cpu_percent": 10.0,
        "memory_percent": 30.0,
        "queue_utilization": 0.1,
        "dependencies": OK_DEPS,
        "lag_statuses": {0: LagStatus.OK},
        "poll_loop_alive": True,
    }
    values.update(overrides)
    return HealthInputs(**values)  # type: ignore[arg-type]


def test_band_edges() -> None:
    band = Band(0.05, 0.10)
    assert band.classify(0.0499) is Status.HEALTHY
    assert band.classify(0.05) is Status.DEGRADED
    assert band.classify(0.0999) is Status.DEGRADED
    assert band.classify(0.10) is Status.UNHEALTHY


def test_all_good_is_healthy() -> None:
    assert judge(inputs(), HealthThresholds()).status is Status.HEALTHY


def test_each_check_can_degrade_or_fail_the_whole() -> None:
    t = HealthThresholds()
    assert judge(inputs(error_rate=0.07), t).status is Status.DEGRADED
    assert judge(inputs(error_rate=0.2), t).batch_processor is Status.UNHEALTHY
    assert judge(inputs(memory_percent=85.0), t).system_resources is Status.DEGRADED
    assert judge(inputs(process_cpu_percent=95.0), t).status is Status.UNHEALTHY
    assert judge(inputs(queue_utilization=0.75), t).queue_health is Status.DEGRADED
    assert judge(inputs(queue_utilization=0.95), t).status is Status.UNHEALTHY
    assert judge(inputs(poll_loop_alive=False), t).status is Status.UNHEALTHY
    stalled = inputs(lag_statuses={0: LagStatus.OK, 3: LagStatus.STALL})
    assert judge(stalled, t).lag is Status.DEGRADED
    assert judge(inputs(lag_statuses={0: LagStatus.WARN}), t).status is Status.HEALTHY


def test_required_dependencies_fail_and_the_cache_degrades() -> None:
    assert dependency_status({**OK_DEPS, "mysql": False}) is Status.UNHEALTHY
    assert dependency_status({**OK_DEPS, "kafka": False}) is Status.UNHEALTHY
    assert dependency_status({**OK_DEPS, "redis": False}) is Status.DEGRADED
    assert dependency_status(OK_DEPS) is Status.HEALTHY


def test_worst() -> None:
    assert worst() is Status.HEALTHY
    assert worst(Status.DEGRADED, Status.HEALTHY) is Status.DEGRADED
    assert worst(Status.DEGRADED, Status.UNHEALTHY) is Status.UNHEALTHY
