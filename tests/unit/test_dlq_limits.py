"""B1: a dead letter always fits (truncated, with size and digest) and never kills the worker."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.sinks.dlq import (
    ORIGINAL_KEY_BYTES,
    ORIGINAL_KEY_SHA256,
    ORIGINAL_VALUE_BYTES,
    ORIGINAL_VALUE_SHA256,
    TRUNCATED_HEADER,
    TRUNCATED_KEY_BYTES,
    DeadLetterSink,
    Delivery,
    fit,
    letter_size,
)
from consumer.tools.dlq import DeadLetter, Replayer, ReplayReport

HEADERS: list[tuple[str, str | bytes | None]] = [
    ("error.reason", b"undecodable"),
    ("source.topic", b"health-data"),
]


def headers(d: Delivery) -> dict[str, bytes]:
    return {n: v if isinstance(v, bytes) else str(v).encode() for n, v in d.headers}


@pytest.fixture
def sink() -> Iterator[DeadLetterSink]:
    s = DeadLetterSink("127.0.0.1:1", "dlq", {}, delivery_timeout_s=1.0)  # never connects
    yield s
    s._producer.purge()
    s.close(0.1)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_a_letter_is_kept_whole_up_to_the_limit_and_truncated_above(delta: int) -> None:
    value = b"v" * 5000
    limit = letter_size(b"sn", value, HEADERS) - delta  # the letter is limit + delta bytes
    d = fit(b"sn", value, HEADERS, limit)
    if delta <= 0:
        assert (d.key, d.value, d.headers, d.truncated) == (b"sn", value, HEADERS, False)
        return
    h = headers(d)
    assert d.truncated and h[TRUNCATED_HEADER] == b"true"
    assert d.size() <= limit and d.key == b"sn" and value.startswith(d.value or b"")
    assert h[ORIGINAL_VALUE_BYTES] == b"5000"
    assert h[ORIGINAL_VALUE_SHA256] == hashlib.sha256(value).hexdigest().encode()


def test_a_huge_key_is_cut_too_and_its_digest_kept() -> None:
    key = b"k" * 999_000
    d = fit(key, b"{}", HEADERS, 1_000_000 - 600)
    h = headers(d)
    assert d.truncated and d.key == key[:TRUNCATED_KEY_BYTES] and d.value == b"{}"
    assert h[ORIGINAL_KEY_BYTES] == b"999000"
    assert h[ORIGINAL_KEY_SHA256] == hashlib.sha256(key).hexdigest().encode()


def test_a_letter_over_the_producer_limit_is_truncated_not_raised(sink: DeadLetterSink) -> None:
    d = sink.send(key=b"sn", value=b"\xff" * 1_010_000, reason="undecodable", detail="x",
                  source_topic="t", source_partition=0, source_offset=7)  # fmt: skip
    assert d.error is None and not d.done.is_set()  # queued for the broker, not failed
    assert d.truncated and d.size() <= sink.max_bytes and sink.truncated == 1


def test_librdkafka_size_refusal_shrinks_the_letter_instead_of_crashing(
    sink: DeadLetterSink,
) -> None:
    sink.max_bytes = 10_000_000  # as if the estimate were wrong: librdkafka raises at once
    d = sink.send(key=b"sn", value=b"\xff" * 3_000_000, reason="undecodable", detail="x",
                  source_topic="t", source_partition=0, source_offset=7)  # fmt: skip
    assert d.error is None and d.truncated and d.size() <= 1_000_000
    assert headers(d)[ORIGINAL_VALUE_BYTES] == b"3000000"


def test_a_broker_size_refusal_is_resent_smaller_until_it_fits(sink: DeadLetterSink) -> None:
    value = b"\xff" * 900_000
    d = sink.send(key=b"sn", value=value, reason="undecodable", detail="x",
                  source_topic="t", source_partition=0, source_offset=7)  # fmt: skip
    sizes = [d.size()]
    for _ in range(40):  # the broker keeps saying "too large": every resend is smaller
        d.fail(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        d = sink.resend(d)
        sizes.append(d.size())
        if not d.value and not d.key:
            break
    assert not d.value and sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 5
    assert len(sizes) < 40  # it ends: headers only, which any broker accepts
    h = headers(d)
    assert h[ORIGINAL_VALUE_SHA256] == hashlib.sha256(value).hexdigest().encode()


def test_any_other_produce_error_fails_the_delivery_not_the_worker(
    sink: DeadLetterSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Refusing:
        def produce(self, *_a: Any, **_k: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))

        def poll(self, _t: float) -> int:
            return 0

        def flush(self, _t: float) -> int:
            return 0

    real = sink._producer
    monkeypatch.setattr(sink, "_producer", Refusing())
    d = sink.send(key=b"sn", value=b"{}", reason="undecodable", detail="x",
                  source_topic="t", source_partition=0, source_offset=7)  # fmt: skip
    assert d.done.is_set() and d.code == KafkaError._UNKNOWN_TOPIC and d.error
    monkeypatch.setattr(sink, "_producer", real)
    again = sink.resend(d)  # the flush resends it after a backoff; now it is queued
    assert again.error is None and again.value == b"{}"


class Msg:
    def __init__(self, hdrs: list[tuple[str, bytes]]) -> None:
        self.hdrs = hdrs

    def headers(self) -> list[tuple[str, bytes]]:
        return self.hdrs

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 5

    def key(self) -> bytes:
        return b"sn"

    def value(self) -> bytes:
        return b"cut"


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def produce(self, topic: str, **kw: Any) -> None:
        self.sent.append((topic, kw))

    def poll(self, _t: float) -> int:
        return 0


def test_replay_refuses_a_truncated_letter_and_says_why() -> None:
    d = fit(b"sn", b"x" * 10_000, [*HEADERS, ("source.partition", b"3"),
                                   ("source.offset", b"9")], 2000)  # fmt: skip
    whole = DeadLetter.from_message(Msg([(n, v) for n, v in HEADERS]))
    cut = DeadLetter.from_message(Msg(list(d.headers)))
    producer, report = Recorder(), ReplayReport(dry_run=False)
    replayer = Replayer(producer, "health-data.dlq", report)
    replayer.send(cut)
    replayer.send(whole)
    assert [t for t, _ in producer.sent] == ["health-data"]  # only the whole one
    assert report.refused == 1 and not report.ok
    digest = hashlib.sha256(b"x" * 10_000).hexdigest()
    assert "refused, truncated" in report.errors[0] and "original 10000 bytes" in report.errors[0]
    assert digest in report.errors[0] and "health-data:3:9" in report.errors[0]
