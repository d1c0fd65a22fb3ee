"""B10: the one shutdown deadline sits below the k8s grace period, with room to spare."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from consumer.service import close_reserve_s

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MARGIN_S = 10  # SIGTERM delivery, interpreter exit, a slow node: see deployment.yaml


def test_the_grace_period_exceeds_the_shutdown_deadline_by_the_documented_margin() -> None:
    config = dict(
        line.split("=", 1) for line in (K8S / "config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    deployment = next(
        d for d in yaml.safe_load_all((K8S / "deployment.yaml").read_text())
        if d and d.get("kind") == "Deployment"
    )  # fmt: skip
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(config["SHUTDOWN_TIMEOUT_S"]) + MARGIN_S


@pytest.mark.parametrize("timeout_s", [1.0, 6.0, 30.0, 300.0])
def test_the_drain_leaves_time_to_commit_and_close_within_the_deadline(timeout_s: float) -> None:
    reserve = close_reserve_s(timeout_s)
    assert 0 < reserve < timeout_s and reserve <= 10.0
