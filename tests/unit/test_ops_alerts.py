import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consumer.observe.lag import LagStatus
from consumer.observe.ops_alerts import AlertEngine, AlertEvent
from consumer.observe.ops_rules import RULES, AlertThresholds, Observation
from consumer.observe.webhook import WebhookNotifier

T = AlertThresholds()
RULE = {r.name: r for r in RULES}


def obs(
    error_rate: float = 0.0,
    queue: float = 0.0,
    memory: float = 10.0,
    time_lag: float = 0.0,
    lag_statuses: Mapping[int, LagStatus] | None = None,
    down: Sequence[str] = (),
) -> Observation:
    return Observation(error_rate, queue, memory, time_lag, lag_statuses or {}, down)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rule_set_names_and_severities() -> None:
    assert {r.name: r.severity for r in RULES} == {
        "high_error_rate": "critical",
        "queue_overflow_risk": "warning",
        "high_memory_usage": "warning",
        "processing_lag": "critical",
        "consumer_stalled": "critical",
        "dependency_down": "critical",
    }


@pytest.mark.parametrize(
    ("rule", "at_threshold", "above"),
    [
        ("high_error_rate", obs(error_rate=0.10), obs(error_rate=0.1001)),
        ("queue_overflow_risk", obs(queue=0.80), obs(queue=0.81)),
        ("high_memory_usage", obs(memory=80.0), obs(memory=80.1)),
        ("processing_lag", obs(time_lag=300.0), obs(time_lag=300.5)),
    ],
)
def test_numeric_rules_fire_only_strictly_above_threshold(
    rule: str, at_threshold: Observation, above: Observation
) -> None:
    check = RULE[rule].check
    assert check(obs(), T)[0] is False
    assert check(at_threshold, T)[0] is False
    firing, value, summary = check(above, T)
    assert firing is True
    assert isinstance(value, float)
    assert summary


def test_thresholds_are_configurable() -> None:
    assert RULE["high_error_rate"].check(obs(error_rate=0.06), AlertThresholds(error_rate=0.05))[0]


def test_consumer_stalled_names_stalled_and_stopped_partitions() -> None:
    check = RULE["consumer_stalled"].check
    ok = {0: LagStatus.OK, 1: LagStatus.WARN, 2: LagStatus.REWIND}
    assert check(obs(lag_statuses=ok), T)[0] is False
    stuck = {**ok, 3: LagStatus.STOP, 5: LagStatus.STALL}
    firing, value, summary = check(obs(lag_statuses=stuck), T)
    assert firing is True
    assert value == "3,5"
    assert "3 (STOP)" in summary and "5 (STALL)" in summary
    assert "0 (" not in summary


def test_dependency_down_names_them() -> None:
    check = RULE["dependency_down"].check
    assert check(obs(), T)[0] is False
    firing, value, summary = check(obs(down=["redis", "mysql"]), T)
    assert firing is True
    assert value == "mysql,redis"
    assert "mysql" in summary and "redis" in summary


def test_transitions_are_returned_once_and_notified_once() -> None:
    clock = FakeClock(1000.0)
    seen: list[AlertEvent] = []
    engine = AlertEngine(T, notify=seen.append, clock=clock)

    assert engine.check(obs()) == []
    clock.now = 1010.0
    [started] = engine.check(obs(error_rate=0.5))
    assert (started.name, started.state, started.severity) == (
        "high_error_rate",
        "firing",
        "critical",
    )
    assert (started.started_at, started.resolved_at, started.value) == (1010.0, None, 0.5)

    for t in (1020.0, 1030.0):
        clock.now = t
        assert engine.check(obs(error_rate=0.6)) == []
    assert [e.name for e in engine.firing()] == ["high_error_rate"]

    clock.now = 1040.0
    [resolved] = engine.check(obs(error_rate=0.01))
    assert (resolved.state, resolved.started_at, resolved.resolved_at) == (
        "resolved",
        1010.0,
        1040.0,
    )
    assert engine.check(obs()) == []
    assert engine.firing() == []
    assert seen == [started, resolved]


def test_firing_lists_current_alerts_with_latest_values() -> None:
    engine = AlertEngine(T, clock=FakeClock())
    engine.check(obs(memory=90.0, down=["mysql"]))
    engine.check(obs(memory=95.0, down=["mysql"]))
    firing = {e.name: e for e in engine.firing()}
    assert set(firing) == {"high_memory_usage", "dependency_down"}
    assert firing["high_memory_usage"].value == 95.0
    assert firing["dependency_down"].value == "mysql"
    assert all(e.state == "firing" for e in firing.values())
    # Returned objects are copies: mutating them does not touch engine state.
    firing["high_memory_usage"].value = 0.0
    assert {e.name: e.value for e in engine.firing()}["high_memory_usage"] == 95.0


def test_history_prunes_after_history_s() -> None:
    clock = FakeClock(0.0)
    engine = AlertEngine(T, clock=clock, history_s=100.0)
    engine.check(obs(queue=0.9))  # firing at 0
    clock.now = 50.0
    engine.check(obs())  # resolved at 50
    assert [(e.name, e.state) for e in engine.history()] == [
        ("queue_overflow_risk", "firing"),
        ("queue_overflow_risk", "resolved"),
    ]
    clock.now = 100.0
    assert len(engine.history()) == 2  # exactly history_s old is kept
    clock.now = 100.5
    assert [e.state for e in engine.history()] == ["resolved"]
    clock.now = 151.0
    assert engine.history() == []


def test_notify_failure_does_not_break_check(caplog: pytest.LogCaptureFixture) -> None:
    def boom(event: AlertEvent) -> None:
        raise RuntimeError("webhook down")

    engine = AlertEngine(T, notify=boom, clock=FakeClock())
    with caplog.at_level(logging.ERROR, logger="consumer.observe.ops_alerts"):
        assert len(engine.check(obs(error_rate=1.0))) == 1
    assert [e.name for e in engine.firing()] == ["high_error_rate"]
    assert any(r.getMessage() == "alert notifier failed" for r in caplog.records)


def test_logs_by_severity_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    engine = AlertEngine(T, clock=clock)
    with caplog.at_level(logging.INFO, logger="consumer.observe.ops_alerts"):
        engine.check(obs(error_rate=1.0, memory=99.0))
        clock.now += 10
        engine.check(obs())
    levels = {(r.__dict__["alert"], r.__dict__["state"]): r.levelno for r in caplog.records}
    assert levels == {
        ("high_error_rate", "firing"): logging.CRITICAL,
        ("high_memory_usage", "firing"): logging.WARNING,
        ("high_error_rate", "resolved"): logging.INFO,
        ("high_memory_usage", "resolved"): logging.INFO,
    }


def test_as_dict_is_json_serialisable() -> None:
    event = AlertEvent("x", "warning", "firing", "s", float("nan"), 1.0, None)
    assert json.loads(json.dumps(event.as_dict()))["value"] == "nan"
    assert set(event.as_dict()) == {
        "name", "severity", "state", "summary", "value", "started_at", "resolved_at"
    }  # fmt: skip


def test_engine_is_safe_under_concurrent_readers() -> None:
    engine = AlertEngine(T)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                engine.firing()
                engine.history()
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    for i in range(500):
        engine.check(obs(error_rate=1.0 if i % 2 else 0.0))
    stop.set()
    for r in readers:
        r.join()
    assert errors == []
    assert len(engine.history()) == 499


# --- WebhookNotifier against a real local HTTP server -------------------------------------


@dataclass
class Recorder:
    statuses: list[int] = field(default_factory=list)  # status per request; then 200
    bodies: list[dict[str, object]] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)
    gate: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, object]]:
        with self.received:
            assert self.received.wait_for(lambda: len(self.bodies) >= n, timeout)
            return list(self.bodies)


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    rec.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            assert self.headers["Content-Type"] == "application/json"
            with rec.received:
                rec.bodies.append(body)
                status = rec.statuses.pop(0) if rec.statuses else 200
                rec.received.notify_all()
            rec.gate.wait(5)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", rec
    finally:
        rec.gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


EVENT = AlertEvent("consumer_stalled", "critical", "firing", "partitions 3", "3", 10.0, None)


def test_webhook_posts_json_body_and_retries_after_500(server: tuple[str, Recorder]) -> None:
    url, rec = server
    rec.statuses = [500]
    notifier = WebhookNotifier(url, timeout_s=2.0, retries=3, backoff_s=0.01)
    notifier(EVENT)
    bodies = rec.wait_for(2)
    notifier.close()
    expected = {
        "alert": "consumer_stalled",
        "severity": "critical",
        "state": "firing",
        "summary": "partitions 3",
        "value": "3",
        "started_at": 10.0,
        "resolved_at": None,
        "source": "healthstream",
    }
    assert bodies == [expected, expected]
    assert notifier.dropped == 0


def test_webhook_does_not_retry_client_errors(server: tuple[str, Recorder]) -> None:
    url, rec = server
    rec.statuses = [400]
    notifier = WebhookNotifier(url, retries=3, backoff_s=0.01)
    notifier(EVENT)
    notifier(replace(EVENT, state="resolved", resolved_at=20.0))
    bodies = rec.wait_for(2)
    notifier.close()
    assert [b["state"] for b in bodies] == ["firing", "resolved"]


def test_webhook_gives_up_after_retries_on_5xx(server: tuple[str, Recorder]) -> None:
    url, rec = server
    rec.statuses = [503, 503, 503]
    notifier = WebhookNotifier(url, retries=2, backoff_s=0.01)
    notifier(EVENT)
    notifier(replace(EVENT, name="dependency_down"))
    bodies = rec.wait_for(4)
    notifier.close()
    assert [b["alert"] for b in bodies] == ["consumer_stalled"] * 3 + ["dependency_down"]


def test_webhook_queue_drops_oldest_when_full(
    server: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    url, rec = server
    rec.gate.clear()  # hold the first request so the queue fills up behind it
    notifier = WebhookNotifier(url, backoff_s=0.01, max_queue=2)
    notifier(replace(EVENT, name="a"))
    rec.wait_for(1)
    with caplog.at_level(logging.WARNING, logger="consumer.observe.ops_alerts"):
        for name in ("b", "c", "d"):
            notifier(replace(EVENT, name=name))  # must not block
    assert notifier.dropped == 1
    assert any("dropped oldest" in r.getMessage() for r in caplog.records)
    rec.gate.set()
    bodies = rec.wait_for(3)
    notifier.close()
    assert [b["alert"] for b in bodies] == ["a", "c", "d"]


def test_webhook_survives_connection_refused() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    notifier = WebhookNotifier(
        f"http://127.0.0.1:{port}/", timeout_s=1.0, retries=1, backoff_s=0.01
    )
    notifier(EVENT)
    notifier.close(timeout_s=5.0)
    assert notifier.dropped == 0


def test_webhook_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        WebhookNotifier("file:///etc/passwd")
