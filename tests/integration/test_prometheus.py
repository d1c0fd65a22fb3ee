"""A real replica's /metrics against the Prometheus tooling and the deploy/ files.

- `promtool check metrics` accepts the exposition (including its lint rules);
- every metric that deploy/prometheus/alerts.yml and the Grafana dashboard query exists;
- a real Prometheus server (Debian's `prometheus`, from scripts/install-tools.sh) scrapes
  the replica, loads alerts.yml and answers a query with the replica's counters.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import ROOT, ConsumerProcess, Stack, free_port, wait_for

pytestmark = pytest.mark.integration

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "healthstream.json"
METRIC_NAME = re.compile(r"\b(health_consumer_[a-z_]+|process_[a-z_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run scripts/install-tools.sh")
    return path


def reading(minute: int, heart_rate: int) -> bytes:
    return json.dumps(
        {
            "data": {
                "deviceSn": "SN1",
                "timestamp": f"2025-06-01 00:{minute:02d}:00",
                "heart_rate": heart_rate,
            }
        }
    ).encode()


def busy_replica(stack: Stack) -> ConsumerProcess:
    """A replica that has written rows, fired a health alert and dead-lettered a message,
    so that the labelled series (per sink, rule type, reason, partition) have samples."""
    with stack.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max,"
            " trend_duration, severity_level, alert_message, customer_id) VALUES "
            "('heart_rate_high', 'heart_rate', 40, 120, 1, 'critical', 'Heart rate high', 0)"
        )
    proc = stack.consumer(LAG_SAMPLE_INTERVAL_S="0.5", ALERT_CHECK_INTERVAL_S="0.5").start()
    heart_rates = [70, 72, 74, 76, 150]  # the last one is above the rule's 120
    stack.produce([(b"SN1", reading(m, hr), []) for m, hr in enumerate(heart_rates)])
    stack.produce([(b"SN1", b"not json", [])])
    n = len(heart_rates)
    wait_for(lambda: stack.health_rows() >= n, 60, what=f"{n} rows")
    wait_for(
        lambda: proc.metric("health_consumer_dead_letters_total") >= 1, 60, what="a dead letter"
    )
    wait_for(
        lambda: proc.metric("health_consumer_health_alerts_fired_total") >= 1,
        60,
        what="a health alert",
    )
    return proc


def metrics_text(proc: ConsumerProcess) -> str:
    status, body = proc.get("/metrics")
    assert status == 200, body[:500]
    return body.decode()


def test_promtool_accepts_the_exposition(stack: Stack) -> None:
    proc = busy_replica(stack)
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=metrics_text(proc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # promtool exits 1 on lint problems too (a counter without _total, a missing HELP...).
    assert result.returncode == 0, (
        f"promtool check metrics exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    proc.terminate()


def referenced_metrics() -> dict[str, set[str]]:
    """Metric names queried by alerts.yml and the dashboard, by file."""
    return {
        path.relative_to(ROOT).as_posix(): set(METRIC_NAME.findall(path.read_text()))
        for path in (RULES, DASHBOARD)
    }


def missing_metrics(proc: ConsumerProcess) -> dict[str, list[str]]:
    """Names queried by alerts.yml or the dashboard that the replica does not expose.

    A reference must name a sample PromQL can select: `..._total` for a counter, the gauge
    name, or `..._bucket/_sum/_count` of an exposed histogram family.
    """
    samples: set[str] = set()
    histograms: set[str] = set()
    for family in text_string_to_metric_families(metrics_text(proc)):
        samples.update(s.name for s in family.samples)
        if family.type == "histogram":
            histograms.add(family.name)
    missing: dict[str, list[str]] = {}
    for source, names in referenced_metrics().items():
        for name in sorted(names):
            hist = next(
                (name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None
            )
            if hist in histograms:
                continue
            if name not in samples:
                missing.setdefault(source, []).append(name)
    return missing


def test_queried_metrics_are_exposed(stack: Stack) -> None:
    proc = busy_replica(stack)
    # Lag and ops-alert gauges come from samplers running every 0.5 s here: give them a
    # bounded moment, then report whatever is still missing.
    deadline = time.monotonic() + 20
    missing = missing_metrics(proc)
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = missing_metrics(proc)
    assert not missing, f"queried but not in the replica's /metrics: {missing}"
    proc.terminate()


class PrometheusServer:
    """Debian's prometheus binary on a free loopback port, scraping one replica."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        self.log_path = tmp / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "healthstream",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        self.config_path = tmp / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.data_dir = tmp / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])

    def api(self, path: str, **params: str) -> Any:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, urllib.error.HTTPError):
            return None  # not listening yet

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def written_records(server: PrometheusServer) -> float:
    answer = server.api("/api/v1/query", query="health_consumer_records_written_total")
    if not answer or answer.get("status") != "success":
        return 0.0
    return max((float(r["value"][1]) for r in answer["data"]["result"]), default=0.0)


def loaded_rules(server: PrometheusServer) -> list[dict[str, Any]]:
    answer = server.api("/api/v1/rules")
    if not answer or answer.get("status") != "success":
        return []
    return [rule for group in answer["data"]["groups"] for rule in group["rules"]]


def test_prometheus_scrapes_a_replica(stack: Stack, tmp_path: Path) -> None:
    proc = busy_replica(stack)
    server = PrometheusServer(tmp_path, proc.port).start()
    try:
        started = time.monotonic()
        try:
            wait_for(lambda: written_records(server) >= 1, 60, what="records_written >= 1")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- prometheus log ---\n{server.log_tail()}") from err

        # alerts.yml loads in a real server and every rule evaluates without error.
        remaining = max(5.0, 60 - (time.monotonic() - started))
        rules = wait_for(
            lambda: (r := loaded_rules(server)) and all(x.get("health") == "ok" for x in r) and r,
            remaining,
            what="all rules evaluated",
        )
        expected = RULES.read_text().count("- alert:")
        assert len(rules) == expected == 12  # 10 consumer rules + 2 gateway rules
        targets = server.api("/api/v1/targets")
        (target,) = targets["data"]["activeTargets"]
        assert target["health"] == "up", target
    finally:
        server.stop()
    proc.terminate()
