"""`health-consumer dlq stats | replay`: inspect the dead-letter topic and send entries back.

Dead letters are written by `consumer/sinks/dlq.py` with the original key and value plus
`error.*` and `source.*` headers. Once the cause is fixed (a DB constraint, a consumer
bug), `replay` republishes the chosen entries to their source topic; the consumer's writes
are idempotent upserts, so replaying an entry twice cannot duplicate a row.

Reading never joins or commits in any group: the reader assign()s every partition from a
start offset up to the end offsets captured when it starts, with a throwaway group id, so
the consumers' committed offsets and a DLQ that keeps growing are both left alone. Entries
are streamed one batch at a time and librdkafka's prefetch and send queues are capped, so
memory stays bounded however large the DLQ is.

A dead letter truncated to fit the DLQ's size limit (`dlq.truncated` header, with the
original sizes and sha256 digests) is refused by `replay`: republishing it would feed the
consumer a message that is not the one the device sent. It is counted and named instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from consumer import __version__
from consumer.settings import Settings
from consumer.sinks.dlq import (
    ORIGINAL_VALUE_BYTES,
    ORIGINAL_VALUE_SHA256,
    SOURCE_TIMESTAMP_HEADER,
    TRUNCATED_HEADER,
)
from schemas.publish import producer_config

log = logging.getLogger(__name__)

# Headers a replayed message carries: which dead letter it came from and where the
# original record sat, so a second failure or an audit can trace it back.
REPLAY_ORIGIN_HEADER = "replay.origin"  # "<dlq topic>:<partition>:<offset>"
REPLAY_SOURCE_HEADER = "replay.source"  # "<source topic>:<partition>:<offset>"
REPLAY_REASON_HEADER = "replay.reason"
REPLAY_VERSION_HEADER = "replay.tool.version"

GROUP_PREFIX = "healthstream-dlq-tool-"
CONSUME_BATCH = 500
# Bounded memory: librdkafka would otherwise prefetch up to 64 MB per partition and queue
# up to 1 GB of unsent messages.
READER_PROPS: dict[str, Any] = {
    "queued.max.messages.kbytes": 8192,
    "fetch.max.bytes": 8 * 1024 * 1024,
    "max.partition.fetch.bytes": 1024 * 1024,
}
PRODUCER_QUEUE_KBYTES = 32 * 1024
SAMPLE_DETAIL_CHARS = 300


class DlqError(Exception):
    """An operator-facing problem (missing topic, bad time, stalled read); exit code 2."""


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ entry: its own coordinates, the original key/value, and the header fields."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    truncated: bool = False
    original_bytes: int | None = None  # of the value, when truncated
    original_sha256: str | None = None
    source_timestamp_ms: int | None = None  # the original message's time (R1)
    replay_origin: str | None = None  # "<dlq>:<p>:<o>" of the entry this one's replay came from
    replay_reason: str | None = None  # that entry's reason

    @property
    def coords(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def failed_again(self) -> bool:
        """The dead letter of a replayed copy that failed for the reason it first had."""
        return self.replay_origin is not None and self.replay_reason == self.reason

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        headers: dict[str, str] = {}
        for name, raw in msg.headers() or []:
            headers[name] = "" if raw is None else bytes(raw).decode("utf-8", "replace")
        ts_type, ts = msg.timestamp()
        return cls(
            partition=msg.partition(),
            offset=msg.offset(),
            timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,
            key=msg.key(),
            value=msg.value(),
            reason=headers.get("error.reason") or "unknown",
            detail=headers.get("error.detail", ""),
            source_topic=headers.get("source.topic") or None,
            source_partition=_int_or_none(headers.get("source.partition")),
            source_offset=_int_or_none(headers.get("source.offset")),
            truncated=TRUNCATED_HEADER in headers,
            original_bytes=_int_or_none(headers.get(ORIGINAL_VALUE_BYTES)),
            original_sha256=headers.get(ORIGINAL_VALUE_SHA256) or None,
            source_timestamp_ms=_int_or_none(headers.get(SOURCE_TIMESTAMP_HEADER)),
            replay_origin=headers.get(REPLAY_ORIGIN_HEADER) or None,
            replay_reason=headers.get(REPLAY_REASON_HEADER) or None,
        )

    def source(self) -> str | None:
        if self.source_topic is None:
            return None
        return f"{self.source_topic}:{_dash(self.source_partition)}:{_dash(self.source_offset)}"

    def summary(self, detail_chars: int = SAMPLE_DETAIL_CHARS) -> dict[str, Any]:
        """JSON-safe view for reports; the value is left out (it is health data)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": format_ms(self.timestamp_ms),
            "reason": self.reason,
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "source": self.source(),
            "detail": _clip(self.detail, detail_chars),
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entries a command acts on: reasons (None = all) and a [since, until) window."""

    reasons: frozenset[str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, dl: DeadLetter) -> bool:
        if self.reasons is not None and dl.reason not in self.reasons:
            return False
        if self.since_ms is None and self.until_ms is None:
            return True
        if dl.timestamp_ms is None:
            return False
        if self.since_ms is not None and dl.timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or dl.timestamp_ms < self.until_ms


# ---------------------------------------------------------------------------- reading


def reader_config(settings: Settings) -> dict[str, Any]:
    """A throwaway group that never commits: the tool must not move anyone's offsets."""
    return {
        **settings.kafka_client,
        **READER_PROPS,
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"{GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # Retention may delete the start offset mid-read: continue from the new start.
        "auto.offset.reset": "earliest",
        "client.id": "healthstream-dlq-tool",
    }


class DeadLetterReader:
    """Streams the DLQ from each partition's start (or `since`) to its end at construction.

    `ranges` and `total` are known up front, so a progress bar can show a percentage.
    Entries produced after the start are left for the next run.
    """

    def __init__(
        self,
        consumer: Any,
        topic: str,
        since_ms: int | None = None,
        timeout_s: float = 10.0,
        idle_limit_s: float = 60.0,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.idle_limit_s = idle_limit_s
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise DlqError(f"dead-letter topic {topic!r} not found (set DLQ_TOPIC)")
        partitions = sorted(metadata.partitions)
        self.ranges: dict[int, tuple[int, int]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False
            )
            self.ranges[p] = (low, high)
        self.partitions = len(partitions)
        self.size = sum(high - low for low, high in self.ranges.values())
        if since_ms is not None:
            self._seek_to_time(since_ms, timeout_s)
        self.total = sum(max(0, high - start) for start, high in self.ranges.values())

    def _seek_to_time(self, since_ms: int, timeout_s: float) -> None:
        """Skip what is older than `since`: the first offset with timestamp >= since; every
        earlier offset is older, so nothing selected is skipped."""
        asked = [TopicPartition(self.topic, p, since_ms) for p in self.ranges]
        for tp in self.consumer.offsets_for_times(asked, timeout=timeout_s):
            low, high = self.ranges[tp.partition]
            start = high if tp.offset < 0 else min(max(tp.offset, low), high)
            self.ranges[tp.partition] = (start, high)

    def __iter__(self) -> Iterator[DeadLetter]:
        pending = {p for p, (start, high) in self.ranges.items() if high > start}
        if not pending:
            return
        self.consumer.assign(
            [TopicPartition(self.topic, p, self.ranges[p][0]) for p in sorted(pending)]
        )
        idle_since = time.monotonic()
        while pending:
            messages = self.consumer.consume(CONSUME_BATCH, timeout=1.0)
            if messages:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.idle_limit_s:
                raise DlqError(
                    f"no progress reading {self.topic!r} for {self.idle_limit_s:.0f}s; "
                    f"partitions not finished: {sorted(pending)}"
                )
            for msg in messages:
                p = msg.partition()
                if p not in pending:
                    continue
                high = self.ranges[p][1]
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= high:
                            self._finish(p, pending)
                        continue
                    if err.fatal():
                        raise DlqError(f"reading {self.topic!r}: {err}")
                    log.warning("transient read error", extra={"error": str(err)})
                    continue
                if msg.offset() >= high:  # appended after we started
                    self._finish(p, pending)
                    continue
                yield DeadLetter.from_message(msg)
                # Gaps (compaction, transaction markers) may hide high - 1: EOF covers them.
                if msg.offset() >= high - 1:
                    self._finish(p, pending)

    def _finish(self, partition: int, pending: set[int]) -> None:
        pending.discard(partition)
        self.consumer.pause([TopicPartition(self.topic, partition)])


# ---------------------------------------------------------------------------- stats


@dataclass
class DlqStats:
    """Counts per reason, the oldest and newest entries, the last few samples per reason.

    Memory is O(reasons x samples), never O(entries).
    """

    samples_per_reason: int = 3
    counts: Counter[str] = field(default_factory=Counter)
    oldest: DeadLetter | None = None
    newest: DeadLetter | None = None
    samples: dict[str, deque[DeadLetter]] = field(default_factory=dict)
    first_ms: dict[str, int] = field(default_factory=dict)
    last_ms: dict[str, int] = field(default_factory=dict)

    def add(self, dl: DeadLetter) -> None:
        self.counts[dl.reason] += 1
        bucket = self.samples.setdefault(dl.reason, deque(maxlen=self.samples_per_reason))
        bucket.append(dl)
        ts = dl.timestamp_ms
        if ts is None:
            return
        if self.oldest is None or _order(dl) < _order(self.oldest):
            self.oldest = dl
        if self.newest is None or _order(dl) > _order(self.newest):
            self.newest = dl
        self.first_ms[dl.reason] = min(self.first_ms.get(dl.reason, ts), ts)
        self.last_ms[dl.reason] = max(self.last_ms.get(dl.reason, ts), ts)

    def as_dict(self) -> dict[str, Any]:
        reasons = sorted(self.counts, key=lambda r: (-self.counts[r], r))
        return {
            "total": sum(self.counts.values()),
            "counts": {r: self.counts[r] for r in reasons},
            "reasons": {
                r: {
                    "count": self.counts[r],
                    "oldest": format_ms(self.first_ms.get(r)),
                    "newest": format_ms(self.last_ms.get(r)),
                }
                for r in reasons
            },
            "oldest": None if self.oldest is None else self.oldest.summary(),
            "newest": None if self.newest is None else self.newest.summary(),
            "samples": {r: [dl.summary() for dl in self.samples[r]] for r in reasons},
        }


def _order(dl: DeadLetter) -> tuple[int, int, int]:
    return (dl.timestamp_ms or 0, dl.partition, dl.offset)


# ---------------------------------------------------------------------------- replay


def replay_producer_config(settings: Settings) -> dict[str, Any]:
    """The gateways' partitioner (murmur2 on the key), so a replayed reading lands on its
    device's partition; acks=all + idempotence so broker retries cannot duplicate."""
    conf = producer_config(settings.kafka_bootstrap_servers)
    conf.update(settings.kafka_client)
    conf.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "queue.buffering.max.kbytes": PRODUCER_QUEUE_KBYTES,
            "client.id": "healthstream-dlq-replay",
        }
    )
    conf.setdefault("message.timeout.ms", 60_000)
    return conf


def replay_headers(dlq_topic: str, dl: DeadLetter) -> list[tuple[str, bytes]]:
    headers = [
        (REPLAY_ORIGIN_HEADER, f"{dlq_topic}:{dl.partition}:{dl.offset}".encode()),
        (REPLAY_REASON_HEADER, dl.reason.encode()),
        (REPLAY_VERSION_HEADER, __version__.encode()),
    ]
    source = dl.source()
    if source is not None:
        headers.insert(1, (REPLAY_SOURCE_HEADER, source.encode()))
    return headers


@dataclass
class ReplayReport:
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    unroutable: int = 0
    refused: int = 0  # truncated dead letters: not the original message
    skipped_failed_again: int = 0  # replayed before and failed again the same way (R2)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.unroutable == 0 and self.refused == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "unroutable": self.unroutable,
            "refused": self.refused,
            "skipped_failed_again": self.skipped_failed_again,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_target": dict(sorted(self.by_target.items())),
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }


class Replayer:
    """Sends dead letters back to their source topic and tallies the broker's answers."""

    MAX_ERRORS = 10

    def __init__(
        self, producer: Any, dlq_topic: str, report: ReplayReport, to_topic: str | None = None
    ) -> None:
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.report = report
        self.to_topic = to_topic

    def send(self, dl: DeadLetter) -> None:
        target = self.to_topic or dl.source_topic
        if target is None:
            self.report.unroutable += 1
            self._error(f"{self.dlq_topic}:{dl.partition}:{dl.offset}: no source.topic header")
            return
        if dl.truncated:
            self.report.refused += 1
            self._error(
                f"{self.dlq_topic}:{dl.partition}:{dl.offset}: refused, truncated dead letter "
                f"(original {_dash(dl.original_bytes)} bytes, sha256 {dl.original_sha256 or '-'}"
                f"); the whole message is only at {dl.source() or 'its source'}"
            )
            return
        self.report.by_target[target] += 1
        if self.producer is None:  # dry run
            return
        while True:
            try:
                self.producer.produce(
                    target,
                    key=dl.key,
                    value=dl.value,
                    headers=replay_headers(self.dlq_topic, dl),
                    on_delivery=self._on_delivery,
                    # The original message time: a reading without a timestamp is stored at
                    # it, as the first time, so a replay stores nothing anew (R1).
                    timestamp=dl.source_timestamp_ms or dl.timestamp_ms or 0,
                )
                break
            except BufferError:  # bounded send queue is full: let deliveries drain it
                self.producer.poll(0.1)
        self.report.sent += 1
        self.producer.poll(0)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            self._error(f"{msg.topic()}: {err}")

    def _error(self, text: str) -> None:
        if len(self.report.errors) < self.MAX_ERRORS:
            self.report.errors.append(text)

    def finish(self, timeout_s: float) -> None:
        """Wait for every delivery report; whatever is still unacknowledged counts as failed."""
        if self.producer is None:
            return
        remaining = int(self.producer.flush(timeout_s))
        if remaining:
            self.report.failed += remaining
            self._error(f"{remaining} messages not acknowledged within {timeout_s:.0f}s")


# ---------------------------------------------------------------------------- running


def scan(
    entries: Iterable[DeadLetter],
    selection: Selection,
    on_entry: Callable[[DeadLetter], None],
    progress: Progress,
) -> int:
    """Feed every selected entry to `on_entry`; return how many entries were read."""
    scanned = 0
    for dl in entries:
        scanned += 1
        if selection.matches(dl):
            on_entry(dl)
        progress.update(scanned)
    progress.close(scanned)
    return scanned


def run_stats(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    selection = Selection(since_ms=args.since, until_ms=args.until)
    consumer = Consumer(reader_config(settings))
    try:
        reader = DeadLetterReader(consumer, settings.dlq_topic, since_ms=args.since)
        stats = DlqStats(samples_per_reason=args.samples)
        progress = Progress(reader.total, enabled=_progress_enabled(args), label="reading")
        scanned = scan(reader, selection, stats.add, progress)
    finally:
        consumer.close()
    result = {
        "topic": settings.dlq_topic,
        "partitions": reader.partitions,
        "scanned": scanned,
        "window": _window(args),
        **stats.as_dict(),
    }
    out.write(json.dumps(result, indent=2) if args.format == "json" else stats_table(result))
    out.write("\n")
    return 0


def run_replay(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    selection = Selection(reasons=frozenset(args.reason), since_ms=args.since, until_ms=args.until)
    report = ReplayReport(dry_run=args.dry_run)
    started = time.monotonic()
    producer = None if args.dry_run else Producer(replay_producer_config(settings))
    replayer = Replayer(producer, settings.dlq_topic, report, to_topic=args.to_topic)

    failed_again = settled_entries(settings, args.since)

    def on_entry(dl: DeadLetter) -> None:
        report.matched += 1
        report.by_reason[dl.reason] += 1
        if dl.failed_again or f"{settings.dlq_topic}:{dl.coords}" in failed_again:
            report.skipped_failed_again += 1
            return
        replayer.send(dl)

    consumer = Consumer(reader_config(settings))
    try:
        reader = DeadLetterReader(consumer, settings.dlq_topic, since_ms=args.since)
        progress = Progress(reader.total, enabled=_progress_enabled(args), label="replaying")
        report.scanned = scan(reader, selection, on_entry, progress)
    finally:
        consumer.close()
        if producer is not None:
            conf = replay_producer_config(settings)
            replayer.finish(float(conf["message.timeout.ms"]) / 1000 + 30)
    report.seconds = time.monotonic() - started
    result = {"topic": settings.dlq_topic, "window": _window(args), **report.as_dict()}
    out.write(json.dumps(result, indent=2) if args.format == "json" else replay_table(result))
    out.write("\n")
    return 0 if report.ok else 1


def settled_entries(settings: Settings, since_ms: int | None) -> set[str]:
    """The entries ("<dlq>:<p>:<o>") whose replay was dead-lettered again for the same
    reason: replaying them once more could only add another dead letter (R2: the DLQ
    doubled on every run). A first pass over the DLQ, headers only kept."""
    settled: set[str] = set()
    consumer = Consumer(reader_config(settings))
    try:
        for dl in DeadLetterReader(consumer, settings.dlq_topic, since_ms=since_ms):
            if dl.failed_again and dl.replay_origin is not None:
                settled.add(dl.replay_origin)
    finally:
        consumer.close()
    return settled


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point for `health-consumer dlq ...`; operator errors exit 2 with one line."""
    try:
        if args.dlq_command == "stats":
            return run_stats(settings, args)
        return run_replay(settings, args)
    except DlqError as exc:
        print(f"health-consumer dlq: {exc}", file=sys.stderr)
        return 2


def add_parser(sub: Any) -> None:
    """Register `dlq stats` and `dlq replay` on the CLI's subparsers."""
    dlq = sub.add_parser("dlq", help="inspect and replay the dead-letter topic (DLQ_TOPIC)")
    cmds = dlq.add_subparsers(dest="dlq_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--since", type=_time_arg, default=None, help="entries dead-lettered at or after T"
        )
        p.add_argument("--until", type=_time_arg, default=None, help="... and before T")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    stats = cmds.add_parser("stats", help="counts by reason, oldest/newest, samples")
    stats.add_argument("--samples", type=int, default=3, help="samples per reason (newest)")
    common(stats)
    replay = cmds.add_parser("replay", help="republish entries to their source topic")
    replay.add_argument(
        "--reason",
        action="append",
        required=True,
        help="error.reason to replay (repeat for several)",
    )
    replay.add_argument("--dry-run", action="store_true", help="count only, send nothing")
    replay.add_argument(
        "--to-topic", default=None, help="send here instead of each entry's source.topic"
    )
    common(replay)


# ---------------------------------------------------------------------------- output


class Progress:
    """A one-line bar on a terminal (stderr); silent otherwise, so logs and pipes stay clean."""

    def __init__(
        self,
        total: int,
        enabled: bool,
        label: str = "",
        stream: TextIO | None = None,
        interval_s: float = 0.2,
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self._next = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            self._draw(done)

    def close(self, done: int) -> None:
        if self.enabled:
            self._draw(done)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, done: int) -> None:
        width = 30
        frac = 1.0 if self.total <= 0 else min(1.0, done / self.total)
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {frac:4.0%} {done}/{self.total}")
        self.stream.flush()


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns; numbers right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        out = []
        for cell, w in zip(cells, widths, strict=True):
            out.append(cell.rjust(w) if cell.isdigit() else cell.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def stats_table(result: dict[str, Any]) -> str:
    lines = [
        f"dead-letter topic {result['topic']}: {result['total']} entries selected "
        f"of {result['scanned']} read, {result['partitions']} partitions"
    ]
    if result["window"]:
        lines.append(f"window: {result['window']}")
    if not result["total"]:
        return "\n".join(lines)
    rows = [
        [reason, str(info["count"]), info["oldest"] or "-", info["newest"] or "-"]
        for reason, info in result["reasons"].items()
    ]
    lines += ["", render_table(["reason", "count", "oldest", "newest"], rows), ""]
    for label in ("oldest", "newest"):
        entry = result[label]
        if entry is not None:
            lines.append(f"{label}: {_entry_line(entry)}")
    lines.append("")
    lines.append("samples (the newest read per reason):")
    for reason, samples in result["samples"].items():
        lines.append(f"  {reason}:")
        for s in samples:
            lines.append(f"    {_entry_line(s, with_reason=False)}")
            lines.append(f"      {s['detail'] or '(no detail)'}")
    return "\n".join(lines)


def replay_table(result: dict[str, Any]) -> str:
    mode = "dry run: nothing sent" if result["dry_run"] else "replayed"
    rows = [
        [name, str(result[name])]
        for name in ("scanned", "matched", "sent", "delivered", "failed", "unroutable", "refused")
    ]
    rows += [[f"reason {r}", str(n)] for r, n in result["by_reason"].items()]
    rows += [[f"to topic {t}", str(n)] for t, n in result["by_target"].items()]
    lines = [f"dead-letter topic {result['topic']} ({mode})"]
    if result["window"]:
        lines.append(f"window: {result['window']}")
    lines += [render_table(["", "count"], rows)]
    lines += [f"error: {e}" for e in result["errors"]]
    return "\n".join(lines)


def _entry_line(entry: dict[str, Any], with_reason: bool = True) -> str:
    reason = f"{entry['reason']}  " if with_reason else ""
    return (
        f"{entry['timestamp'] or '-'}  p{entry['partition']}@{entry['offset']}  {reason}"
        f"key={entry['key']}  from {entry['source'] or '?'}"
    )


def _window(args: argparse.Namespace) -> str | None:
    if args.since is None and args.until is None:
        return None
    return f"[{format_ms(args.since) or '-'}, {format_ms(args.until) or '-'})"


# ---------------------------------------------------------------------------- parsing

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_time(text: str, now: dt.datetime | None = None) -> int:
    """`2025-06-01T10:00:00Z`, `2025-06-01 10:00` (UTC when no zone), `2025-06-01`, or an age
    like `90m`, `2h`, `7d` (that long before now) -> epoch milliseconds."""
    text = text.strip()
    rel = _RELATIVE.match(text)
    if rel:
        now = now or dt.datetime.now(dt.UTC)
        try:
            moment = now - dt.timedelta(seconds=int(rel.group(1)) * _UNIT_S[rel.group(2)])
        except OverflowError:
            moment = dt.datetime.min.replace(tzinfo=dt.UTC)
    else:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"not a time: {text!r} (use ISO 8601 like 2025-06-01T10:00:00Z, or an age like 2h)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    # Kafka keeps epoch milliseconds, and -1 means "latest" to it: a time before the epoch
    # would select nothing, silently (issue 18, R3).
    if moment < EPOCH:
        raise ValueError(f"{text!r} is before 1970-01-01T00:00:00Z, the first time Kafka knows")
    return int((moment - EPOCH).total_seconds() * 1000)


def _time_arg(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _dash(value: int | None) -> str:
    return "?" if value is None else str(value)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
