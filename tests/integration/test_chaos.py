"""The short chaos profile inside `make test`: kill -9 and a MariaDB outage under load,
twelve partitions flushing at once, with genuine duplicates (retried uploads, readings
repeated in a message) and a 3-reading trend rule in the workload, on the write path the
consumer ships.

It runs on its own private stack (ports 29092/29093/23306/26379, .runtime/chaos-test), so
the shared services the other tests use are never stopped. CHAOS_SEED replays a run.
The crafted F1-F5 inputs (inputs that once crashed decoders or the DB path) are in the
workload too.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from consumer.tools import chaos

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_short_profile_keeps_every_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"chaos seed {seed} (replay: CHAOS_SEED={seed})")
    result_path = tmp_path / "result.json"
    argv = [
        "--profile", "short",
        "--seed", str(seed),
        "--stack-ports", "29092,29093,23306,26379",
        "--runtime-dir", str(ROOT / ".runtime" / "chaos-test"),
        "--result", str(result_path),
    ]  # fmt: skip
    code = chaos.main(argv)

    result = json.loads(result_path.read_text())
    assert result["crafted"] is True
    faults = {event["name"] for event in result["timeline"]}
    assert {"kill9", "restart", "mariadb_down", "mariadb_up"} <= faults, sorted(faults)
    assert result["readings"] >= 20_000
    # Concurrent flushes must meet genuine duplicates (issue 16): retries and repeats.
    assert result["duplicate_readings"] >= 200, result["duplicate_readings"]
    # A trend rule whose runs span kills and restarts (issue 17, B11).
    assert result["trend_alerts"] >= 10, result["trend_alerts"]
    failed = {i["name"]: i["samples"] for i in result["invariants"] if not i["ok"]}
    assert not failed, f"seed {seed}: {json.dumps(failed, indent=1)}"
    assert len(result["invariants"]) >= 12
    assert code == 0
