"""deploy/prometheus and deploy/grafana: valid for the tools that load them.

`promtool` checks the scrape config and the alert rules and runs the rules' unit tests
(deploy/prometheus/alerts_test.yml). It comes with Debian's `prometheus` package, which
scripts/install-tools.sh installs; a missing promtool fails these tests rather than
skipping them, so a machine without it cannot pass silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "healthstream.json"
DATASOURCE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = GRAFANA_DIR / "provisioning" / "dashboards" / "healthstream.yml"

EXPECTED_ALERTS = {
    "HealthstreamLagGrowing",
    "HealthstreamConsumerStalled",
    "HealthstreamTimeLagHigh",
    "HealthstreamDLQRatioHigh",
    "HealthstreamSlowFlushP99",
    "HealthstreamRebalanceStorm",
    "HealthstreamTargetDown",
    "HealthstreamDependencyDown",
    "HealthstreamUnhealthy",
    "HealthstreamPartitionsNotAhead",
    "HealthstreamGateway5xxRateHigh",
    "HealthstreamGatewayKafkaUnreachable",
}


def promtool(*args: str) -> str:
    """Run promtool from the repo root; fail with its output unless it exits 0."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool not found on PATH: run scripts/install-tools.sh "
            "(installs Debian's prometheus package, which ships promtool)"
        )
    result = subprocess.run(
        [binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}:\n{output}"
    )
    return output


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def rules() -> list[dict[str, Any]]:
    groups = load_yaml(RULES)["groups"]
    assert [g["name"] for g in groups] == ["healthstream"]
    found: list[dict[str, Any]] = groups[0]["rules"]
    return found


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def leaf_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels that show data: rows are containers (a collapsed row nests its panels)."""
    out: list[dict[str, Any]] = []
    for panel in panels:
        if panel.get("type") == "row":
            out.extend(leaf_panels(panel.get("panels", [])))
        else:
            out.append(panel)
    return out


# --- promtool -----------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    output = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in output


def test_promtool_rule_unit_tests() -> None:
    promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_promtool_check_config() -> None:
    # rule_files are resolved relative to the config file, so alerts.yml is checked too.
    output = promtool("check", "config", str(CONFIG.relative_to(ROOT)))
    assert "1 rule files found" in output


# --- what the files say -----------------------------------------------------------------------


def test_scrape_config_discovers_the_compose_replicas() -> None:
    config = load_yaml(CONFIG)
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["healthstream"]
    assert job["dns_sd_configs"] == [
        {"names": ["consumer"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]


def test_every_rule_has_for_severity_and_annotations() -> None:
    found = rules()
    assert {r["alert"] for r in found} == EXPECTED_ALERTS
    for rule in found:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            if check.get("exp_alerts"):
                fires.add(check["alertname"])
                for alert in check["exp_alerts"]:
                    assert alert["exp_labels"]["severity"], check["alertname"]
                    assert set(alert["exp_annotations"]) == {"summary", "description"}
            else:
                silent.add(check["alertname"])
    assert fires == EXPECTED_ALERTS, f"no firing case for {EXPECTED_ALERTS - fires}"
    assert silent == EXPECTED_ALERTS, f"no non-firing case for {EXPECTED_ALERTS - silent}"


# --- Grafana ------------------------------------------------------------------------------


def test_dashboard_panels_all_query_prometheus() -> None:
    board = dashboard()
    assert board["uid"] == "healthstream"
    assert board["title"]
    panels = leaf_panels(board["panels"])
    assert len(panels) >= 15
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        title = panel.get("title", "?")
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert any(exprs), f"panel {title!r} has no target with an expr"
        assert all(exprs), f"panel {title!r} has a target without an expr"
        assert panel["datasource"]["uid"] == "prometheus", title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", title
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {title!r} is wider than the grid"


def test_dashboard_covers_the_key_metrics() -> None:
    text = DASHBOARD.read_text()
    for metric in (
        "health_consumer_records_written_total",
        "health_consumer_records_consumed_total",
        "health_consumer_end_to_end_latency_seconds_bucket",
        "health_consumer_flush_duration_seconds_bucket",
        "health_consumer_offset_lag_records",
        "health_consumer_time_lag_seconds",
        "health_consumer_lag_status",
        "health_consumer_queue_depth_records",
        "health_consumer_queue_utilization_ratio",
        "health_consumer_dead_letters_total",
        "health_consumer_records_duplicate_total",
        "health_consumer_health_alerts_fired_total",
        "health_consumer_ops_alerts_firing",
        "health_consumer_rebalances_total",
        "health_consumer_commits_total",
        "health_consumer_dependency_up",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ):
        assert metric in text, f"dashboard does not chart {metric}"


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = load_yaml(DATASOURCE)["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    providers = load_yaml(DASHBOARD_PROVIDER)["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [
        ("file", "/var/lib/grafana/dashboards")
    ]


def test_thresholds_shared_with_the_ops_alerts_are_the_settings_defaults() -> None:
    """The replica's own alerts (ALERT_*) and the Prometheus rules judge the same
    quantities by one number each: the settings default."""
    from consumer.observe.ops_rules import AlertThresholds
    from consumer.settings import Settings

    default = {name: f.default for name, f in Settings.model_fields.items()}
    rules = {
        r["alert"]: r["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for r in group["rules"]
    }

    def threshold(alert: str) -> float:
        return float(rules[alert].rsplit(">", 1)[1])

    assert threshold("HealthstreamDLQRatioHigh") == default["alert_error_rate"]
    assert threshold("HealthstreamTimeLagHigh") == default["alert_time_lag_s"]
    assert AlertThresholds() == AlertThresholds(
        error_rate=default["alert_error_rate"],
        queue_utilization=default["alert_queue_utilization"],
        memory_percent=default["alert_memory_percent"],
        time_lag_s=default["alert_time_lag_s"],
    )
