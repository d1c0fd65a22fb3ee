"""Issue 17 B3 through the real process: memory is bounded in bytes, not records.

600 valid readings each carrying a 0.9 MB workoutData, 600 devices over 4 partitions:
every byte the limits allow. A replica's peak RSS must stay under the 384 MiB its pod
gets in deploy/k8s, and every reading must be stored.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from tests.integration.stack import Stack, drop_stack, make_stack, wait_for

pytestmark = pytest.mark.integration

POD_LIMIT_MB = 384
READINGS = 600
WORKOUT_BYTES = 900_000


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def message(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    sn = f"MEM-{i:04d}"
    ts = dt.datetime(2025, 6, 4, 8, 0, 0) + dt.timedelta(seconds=i)
    workout = orjson.dumps({"id": i, "track": "x" * WORKOUT_BYTES}).decode()
    reading = {
        "deviceSn": sn,
        "heart_rate": 70,
        "timestamp": f"{ts:%Y-%m-%d %H:%M:%S}",
        "workoutData": workout,
    }
    return sn.encode(), orjson.dumps({"data": reading}), []


@pytest.fixture
def four_partitions() -> Stack:
    s = make_stack(partitions=4)
    yield s
    drop_stack(s)


@pytest.mark.timeout(400)
def test_a_backlog_of_megabyte_readings_stays_under_the_pod_limit(four_partitions: Stack) -> None:
    stack = four_partitions
    stack.produce(message(i) for i in range(READINGS))
    proc = stack.consumer().start()
    assert proc.proc is not None
    wait_for(lambda: stack.health_rows() == READINGS, 300, what=f"{READINGS} rows")
    peak = peak_rss_mb(proc.proc.pid)
    print(f"peak RSS {peak:.0f} MB")
    assert peak < POD_LIMIT_MB, f"peak RSS {peak:.0f} MB >= the pod's {POD_LIMIT_MB} MiB"
    assert proc.terminate() == 0
