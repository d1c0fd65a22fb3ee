"""Run and observe consumer replicas as OS processes (demo, benchmarks, operators' scripts).

Kept in the package, not in tests, because `make demo` and `make bench` drive real
replicas the same way an operator would: one `health-consumer run` process each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class ReplicaProcess:
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ReplicaProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        binary = str(Path(sys.executable).with_name("health-consumer"))
        env = {**os.environ, **self.env, "HTTP_PORT": str(self.port)}
        self.proc = subprocess.Popen([binary, "run"], env=env, stdout=log, stderr=log)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as err:
            return int(err.code), bytes(err.read())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"replica exited {self.proc.returncode}; see {self.log_path}")
            try:
                if self.get("/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"replica not ready after {timeout}s; see {self.log_path}")

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Metric sample name -> [(labels, value)] from /metrics."""
        _, body = self.get("/metrics")
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def total(
    samples: list[dict[str, list[tuple[dict[str, str], float]]]], name: str, **labels: str
) -> float:
    """Sum a metric over replicas (and over label values not fixed by `labels`)."""
    return sum(
        value
        for s in samples
        for lab, value in s.get(name, [])
        if all(lab.get(k) == v for k, v in labels.items())
    )


def histogram_quantile(
    samples: list[dict[str, list[tuple[dict[str, str], float]]]], name: str, q: float
) -> float | None:
    """Prometheus-style quantile over the merged `_bucket` series of all replicas."""
    buckets: dict[float, float] = {}
    for s in samples:
        for lab, value in s.get(name + "_bucket", []):
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count == 0:
        return None
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return prev_bound
            width = buckets[bound] - prev_count
            frac = (rank - prev_count) / width if width else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, buckets[bound]
    return prev_bound
