"""The DLQ tool's logic with an in-memory Kafka stand-in: ranges, streaming, stats, replay."""

from __future__ import annotations

import argparse
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.cli import _parser
from consumer.tools.dlq import (
    DeadLetter,
    DeadLetterReader,
    DlqError,
    DlqStats,
    Progress,
    Replayer,
    ReplayReport,
    Selection,
    format_ms,
    parse_time,
    render_table,
    replay_headers,
    stats_table,
)

TOPIC = "health-data.dlq"


@dataclass
class FakeMessage:
    _partition: int
    _offset: int
    _ts: int = 1_700_000_000_000
    _headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    _key: bytes | None = b"CRFTQ00000000001"
    _value: bytes | None = b"{}"
    _error: Any = None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return TOPIC


class Eof:
    def code(self) -> int:
        return int(KafkaError._PARTITION_EOF)


def entry(p: int, o: int, reason: str = "invalid_json", ts: int | None = None) -> FakeMessage:
    headers: list[tuple[str, bytes | None]] = [
        ("error.reason", reason.encode()),
        ("error.detail", f"detail {p}/{o}".encode()),
        ("source.topic", b"health-data"),
        ("source.partition", str(p).encode()),
        ("source.offset", str(o * 10).encode()),
    ]
    return FakeMessage(p, o, ts if ts is not None else 1_700_000_000_000 + o, headers)


class FakeConsumer:
    """Partitions hold messages at explicit offsets; consume() hands out `batch` at a time."""

    def __init__(
        self,
        logs: dict[int, list[FakeMessage]],
        low: dict[int, int] | None = None,
        high: dict[int, int] | None = None,
        batch: int = 2,
    ) -> None:
        self.logs = logs
        self.low = low or {p: (msgs[0].offset() if msgs else 0) for p, msgs in logs.items()}
        self.high = high or {p: (msgs[-1].offset() + 1 if msgs else 0) for p, msgs in logs.items()}
        self.batch = batch
        self.assigned: dict[int, int] = {}
        self.paused: set[int] = set()
        self.consume_calls = 0
        self._stream_it: Iterator[FakeMessage] | None = None

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(error=None, partitions={p: object() for p in self.logs})
        return SimpleNamespace(topics={TOPIC: meta} if topic == TOPIC else {})

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return self.low[tp.partition], self.high[tp.partition]

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        out = []
        for tp in tps:
            hit = [m.offset() for m in self.logs[tp.partition] if m._ts >= tp.offset]
            out.append(SimpleNamespace(partition=tp.partition, offset=hit[0] if hit else -1))
        return out

    def assign(self, tps: list[Any]) -> None:
        self.assigned = {tp.partition: tp.offset for tp in tps}

    def pause(self, tps: list[Any]) -> None:
        self.paused.update(tp.partition for tp in tps)

    def _stream(self) -> Iterator[FakeMessage]:
        for p, start in self.assigned.items():
            for m in self.logs[p]:
                if m.offset() >= start:
                    yield m
            yield FakeMessage(p, self.high[p], _error=Eof())

    def consume(self, num: int, timeout: float) -> list[FakeMessage]:
        self.consume_calls += 1
        if self._stream_it is None:
            self._stream_it = self._stream()
        out = []
        for m in self._stream_it:
            if m.partition() not in self.paused:
                out.append(m)
            if len(out) >= min(num, self.batch):
                break
        return out


def test_reads_each_partition_from_start_to_the_end_captured_at_start() -> None:
    logs = {0: [entry(0, o) for o in range(3)], 1: [entry(1, o) for o in range(5, 7)], 2: []}
    consumer = FakeConsumer(logs)
    reader = DeadLetterReader(consumer, TOPIC)
    assert reader.total == 5 and reader.partitions == 3
    # Written after the start: left for the next run.
    consumer.logs[0].append(entry(0, 3))
    got = [(dl.partition, dl.offset) for dl in reader]
    assert got == [(0, 0), (0, 1), (0, 2), (1, 5), (1, 6)]
    assert consumer.assigned == {0: 0, 1: 5}  # the empty partition is not even assigned
    assert consumer.paused == {0, 1}


def test_streams_instead_of_loading_everything() -> None:
    consumer = FakeConsumer({0: [entry(0, o) for o in range(1000)]}, batch=10)
    first = next(iter(DeadLetterReader(consumer, TOPIC)))
    assert first.offset == 0
    assert consumer.consume_calls == 1  # one small batch pulled, not the whole topic


def test_partition_eof_ends_a_partition_whose_last_offsets_are_gaps() -> None:
    # Offsets 0..4 exist but 3-4 are compacted away / transaction markers: EOF at 5.
    consumer = FakeConsumer({0: [entry(0, o) for o in range(3)]}, high={0: 5})
    assert [dl.offset for dl in DeadLetterReader(consumer, TOPIC)] == [0, 1, 2]


def test_since_seeks_to_the_first_offset_at_or_after_the_time() -> None:
    logs = {0: [entry(0, o, ts=1000 * o) for o in range(10)]}
    reader = DeadLetterReader(FakeConsumer(logs), TOPIC, since_ms=7000)
    assert reader.total == 3
    assert [dl.offset for dl in reader] == [7, 8, 9]
    nothing = DeadLetterReader(FakeConsumer(logs), TOPIC, since_ms=99_000)
    assert nothing.total == 0 and list(nothing) == []


def test_missing_topic_is_an_operator_error() -> None:
    consumer = FakeConsumer({0: []})
    with pytest.raises(DlqError, match="not found"):
        DeadLetterReader(consumer, "other.dlq")


def test_dead_letter_from_headers_and_without_them() -> None:
    dl = DeadLetter.from_message(entry(2, 7, "schema_violation"))
    assert (dl.reason, dl.detail, dl.source()) == (
        "schema_violation",
        "detail 2/7",
        "health-data:2:70",
    )
    bare = DeadLetter.from_message(FakeMessage(0, 1, _key=None))
    assert bare.reason == "unknown" and bare.source() is None
    assert bare.summary()["key"] is None and "value" not in bare.summary()


def test_selection_by_reason_and_half_open_window() -> None:
    dl = DeadLetter.from_message(entry(0, 0, "db_rejected", ts=5000))
    assert Selection().matches(dl)
    assert Selection(reasons=frozenset({"db_rejected"})).matches(dl)
    assert not Selection(reasons=frozenset({"invalid_json"})).matches(dl)
    assert Selection(since_ms=5000, until_ms=5001).matches(dl)
    assert not Selection(until_ms=5000).matches(dl)
    assert not Selection(since_ms=5001).matches(dl)


def test_stats_counts_oldest_newest_and_keeps_only_the_newest_samples() -> None:
    stats = DlqStats(samples_per_reason=2)
    for o, (reason, ts) in enumerate(
        [("a", 300), ("b", 100), ("a", 500), ("a", 200), ("b", 900), ("a", 400)]
    ):
        stats.add(DeadLetter.from_message(entry(0, o, reason, ts=ts)))
    out = stats.as_dict()
    assert out["total"] == 6 and out["counts"] == {"a": 4, "b": 2}
    assert out["oldest"]["offset"] == 1 and out["newest"]["offset"] == 4
    assert [s["offset"] for s in out["samples"]["a"]] == [3, 5]
    assert out["reasons"]["a"] == {
        "count": 4,
        "oldest": format_ms(200),
        "newest": format_ms(500),
    }
    text = stats_table({"topic": TOPIC, "partitions": 1, "scanned": 6, "window": None, **out})
    assert any(line.split()[:2] == ["a", "4"] for line in text.splitlines())
    assert "detail 0/5" in text


def test_parse_time_formats() -> None:
    assert parse_time("2025-06-01T10:00:00Z") == 1_748_772_000_000
    assert parse_time("2025-06-01 10:00:00") == 1_748_772_000_000  # no zone: UTC
    assert parse_time("2025-06-01T12:00:00+02:00") == 1_748_772_000_000
    assert parse_time("2025-06-01") == 1_748_736_000_000
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
    assert parse_time("2h", now=now) == 1_748_772_000_000
    assert parse_time("1d", now=now) == parse_time("2025-05-31T12:00:00Z")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("last tuesday")
    assert format_ms(1_748_772_000_123) == "2025-06-01T10:00:00.123Z"


class FakeProducer:
    def __init__(self, fail_topics: frozenset[str] = frozenset(), full_once: bool = False) -> None:
        self.fail_topics = fail_topics
        self.full_once = full_once
        self.pending: list[tuple[Any, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.polls = 0
        self.undeliverable = 0

    def produce(self, topic: str, **kw: Any) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.sent.append({"topic": topic, **kw})
        err = "MSG_SIZE_TOO_LARGE" if topic in self.fail_topics else None
        self.pending.append((kw["on_delivery"], (err, SimpleNamespace(topic=lambda: topic))))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        served, self.pending = self.pending, []
        for cb, (err, msg) in served:
            cb(err, msg)
        return len(served)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return self.undeliverable


def test_replayer_sends_key_value_and_origin_headers() -> None:
    producer = FakeProducer(full_once=True)
    report = ReplayReport(dry_run=False)
    replayer = Replayer(producer, TOPIC, report)
    dl = DeadLetter.from_message(entry(3, 42, "db_rejected"))
    replayer.send(dl)
    replayer.finish(1)
    assert report.sent == report.delivered == 1 and report.ok
    (sent,) = producer.sent
    assert sent["topic"] == "health-data" and sent["key"] == dl.key and sent["value"] == dl.value
    headers = dict(sent["headers"])
    assert headers["replay.origin"] == b"health-data.dlq:3:42"
    assert headers["replay.source"] == b"health-data:3:420"
    assert headers["replay.reason"] == b"db_rejected"
    assert sent["headers"] == replay_headers(TOPIC, dl)


def test_replayer_counts_failures_unroutable_and_unacknowledged() -> None:
    producer = FakeProducer(fail_topics=frozenset({"health-data"}))
    report = ReplayReport(dry_run=False)
    replayer = Replayer(producer, TOPIC, report)
    replayer.send(DeadLetter.from_message(entry(0, 1)))
    replayer.send(DeadLetter.from_message(FakeMessage(0, 2)))  # no source.topic
    producer.undeliverable = 2
    replayer.finish(1)
    assert (report.delivered, report.failed, report.unroutable) == (0, 3, 1)
    assert not report.ok and len(report.errors) == 3


def test_dry_run_counts_targets_and_sends_nothing() -> None:
    report = ReplayReport(dry_run=True)
    replayer = Replayer(None, TOPIC, report, to_topic="elsewhere")
    replayer.send(DeadLetter.from_message(entry(0, 1)))
    replayer.finish(1)
    assert report.sent == 0 and report.by_target == {"elsewhere": 1} and report.ok


def test_progress_is_silent_off_a_terminal_and_draws_a_bar_on_one() -> None:
    quiet = io.StringIO()
    p = Progress(10, enabled=False, stream=quiet)
    p.update(5)
    p.close(10)
    assert quiet.getvalue() == ""
    tty = io.StringIO()
    p = Progress(10, enabled=True, label="reading", stream=tty, interval_s=0)
    p.update(5)
    p.close(10)
    assert "50%" in tty.getvalue() and "100% 10/10" in tty.getvalue()


def test_render_table_aligns_columns() -> None:
    text = render_table(["reason", "count"], [["a", "5"], ["longer", "123"]])
    assert text.splitlines() == ["reason  count", "------  -----", "a           5", "longer    123"]


def test_cli_requires_a_reason_to_replay() -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["dlq", "replay"])
    assert exc.value.code == 2
    args = _parser().parse_args(
        ["dlq", "replay", "--reason", "a", "--reason", "b", "--since", "2h", "--dry-run"]
    )
    assert isinstance(args, argparse.Namespace)
    assert args.reason == ["a", "b"] and args.dry_run and isinstance(args.since, int)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:00.001Z", 1),  # the epoch + 1 ms
        ("1970-01-01T00:00:00Z", 0),  # the epoch
        ("1969-12-31T23:59:59.999Z", None),  # - 1 ms: Kafka would read -1 as "latest"
        ("99999999d", None),  # an age past year 1: an OverflowError traceback before
    ],
)
def test_parse_time_at_the_epoch_boundary(text: str, ms: int | None) -> None:
    """Issue 18 R3."""
    if ms is None:
        with pytest.raises(ValueError, match="before 1970-01-01"):
            parse_time(text)
    else:
        assert parse_time(text) == ms
