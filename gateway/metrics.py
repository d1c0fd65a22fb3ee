"""The gateway's Prometheus metrics, summed over its worker processes.

Several worker processes (GATEWAY_WORKERS) may serve one port and a scrape lands on any
of them, so each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, set up by `gateway.cli` before the workers start)
and /metrics merges them all. Without that variable (one process, unit tests) the metrics
live in a plain registry.
"""

from __future__ import annotations

import bisect
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from gateway import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Upload latency is a few ms when healthy and up to the delivery timeout when Kafka is slow.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
UPLOAD = "/upload_health_data"


class GatewayMetrics:
    """Every metric of one gateway process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "health_gateway_requests_total",
            "HTTP requests answered, by handler and status code.",
            ["handler", "code"],
            registry=reg,
        )
        self.upload_duration = Histogram(
            "health_gateway_upload_duration_seconds",
            "Time from receiving an upload's headers to its answer (broker acks included).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.records_produced = Counter(
            "health_gateway_records_produced_total",
            "Kafka records the broker acknowledged (one per device per upload).",
            registry=reg,
        )
        self.readings_accepted = Counter(
            "health_gateway_readings_accepted_total",
            "Readings in uploads answered 200.",
            registry=reg,
        )
        self.produce_errors = Counter(
            "health_gateway_produce_errors_total",
            "Uploads answered 503 because Kafka could not take them, by reason.",
            ["reason"],
            registry=reg,
        )
        self.rejected = Counter(
            "health_gateway_uploads_rejected_total",
            "Uploads refused with a 4xx, by reason.",
            ["reason"],
            registry=reg,
        )
        self.in_flight = Gauge(
            "health_gateway_requests_in_flight",
            "Uploads being processed now (summed over live workers).",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.kafka_up = Gauge(
            "health_gateway_kafka_up",
            "1 when every live worker's producer reaches Kafka.",
            multiprocess_mode="livemin",
            registry=reg,
        )
        self.build_info = Gauge(
            "health_gateway_build_info",
            "Gateway version.",
            ["version"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.build_info.labels(__version__).set(1)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(metrics: GatewayMetrics) -> bytes:
    """The /metrics body: all workers' samples in multiprocess mode, else this process's."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def prepare_multiprocess_dir(directory: str) -> None:
    """Start from an empty directory: files of an earlier run would be summed in."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (in-flight, kafka_up) from the sums."""
    directory = multiprocess_dir()
    if directory is not None:
        prom_multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class Tally:
    """Per-request counts in plain ints, added to the shared metrics by `flush()` (once a
    second and before every scrape). Why: a prometheus-client sample in multiprocess mode
    is a lock, a pid check and an mmap write, and an upload moved five of them, a
    noticeable share of the CPU budget of issue 19 (docs/performance.md, "Figures behind
    the design notes")."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._bounds = list(metrics.upload_duration._upper_bounds)
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0
        self.requests: dict[tuple[str, int], int] = {}
        self.records = 0
        self.readings = 0

    def upload(self, code: int, seconds: float) -> None:
        """One answered upload: its status and its time from request to answer."""
        self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds
        key = (UPLOAD, code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def flush(self) -> None:
        metrics = self._metrics
        for (handler, code), n in self.requests.items():
            metrics.requests.labels(handler, str(code)).inc(n)
        self.requests = {}
        if self.records:
            metrics.records_produced.inc(self.records)
            metrics.readings_accepted.inc(self.readings)
            self.records = self.readings = 0
        histogram = metrics.upload_duration
        if any(self._buckets):
            # prometheus-client keeps a histogram as one value per bucket (not cumulative)
            # plus the sum; adding to them is what `observe()` does, n at a time.
            for value, n in zip(histogram._buckets, self._buckets, strict=True):
                if n:
                    value.inc(n)
            histogram._sum.inc(self._sum)
            self._buckets = [0] * len(self._bounds)
            self._sum = 0.0
