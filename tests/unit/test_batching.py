import pytest

from consumer.pipeline.batching import Batch, BatchPolicy, DeadLetter, PendingMessage
from consumer.pipeline.flow_control import FlowControl
from consumer.pipeline.retry import Backoff
from tests.records import make_record


def pending(offset: int, n: int = 1, dead: bool = False) -> PendingMessage:
    records = [make_record(seconds=offset * 100 + i) for i in range(n)]
    letter = DeadLetter("invalid_json", "x") if dead else None
    return PendingMessage(offset, 1_700_000_000_000, b"k", b"v", records, letter)


def test_flushes_when_size_reached() -> None:
    policy = BatchPolicy(max_records=3, max_wait_s=10)
    batch = Batch(0)
    batch.add(pending(5, 2), now=0.0)
    assert not policy.should_flush(batch, now=0.1)
    batch.add(pending(6, 1), now=0.2)
    assert policy.should_flush(batch, now=0.2)
    assert batch.next_offset == 7
    assert batch.record_count == 3


def test_flushes_when_oldest_is_too_old() -> None:
    policy = BatchPolicy(max_records=1000, max_wait_s=0.25)
    batch = Batch(0)
    batch.add(pending(1), now=10.0)
    batch.add(pending(2), now=10.2)
    assert not policy.should_flush(batch, now=10.24)
    assert policy.should_flush(batch, now=10.25)
    assert policy.seconds_until_due(batch, now=10.1) == pytest.approx(0.15)


def test_empty_batch_never_flushes_and_has_no_offset() -> None:
    policy = BatchPolicy(max_records=1, max_wait_s=0.0)
    batch = Batch(3)
    assert not policy.should_flush(batch, now=1e9)
    assert policy.seconds_until_due(batch, now=0) is None
    with pytest.raises(ValueError):
        _ = batch.next_offset


def test_dead_letter_only_messages_still_advance_the_offset() -> None:
    policy = BatchPolicy(max_records=10, max_wait_s=0.1)
    batch = Batch(0)
    batch.add(pending(9, 0, dead=True), now=0.0)
    assert batch.record_count == 0
    assert policy.should_flush(batch, now=0.1)
    assert batch.next_offset == 10
    assert [m.offset for m in batch.messages if m.dead_letter is not None] == [9]


def test_offsets_must_increase() -> None:
    batch = Batch(0)
    batch.add(pending(4), now=0)
    with pytest.raises(ValueError, match="offsets must increase"):
        batch.add(pending(4), now=0)


def test_flow_control_hysteresis() -> None:
    fc = FlowControl(max_records=5000)
    assert not fc.should_pause(4999)
    assert fc.should_pause(5000)
    assert not fc.should_resume(2500)
    assert fc.should_resume(2499)


def test_backoff_grows_to_cap_with_jitter() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, rand=lambda: 1.0)
    delays = [b.next_delay() for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    low = Backoff(initial_s=0.1, max_s=1.0, rand=lambda: 0.0)
    assert low.next_delay() == pytest.approx(0.05)
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)


def test_eager_policy_flushes_when_drained_and_lets_batches_grow_otherwise() -> None:
    eager = BatchPolicy(max_records=1000, max_wait_s=10, eager=True)
    batch = Batch(0)
    batch.add(pending(1), now=0.0)
    assert eager.should_flush(batch, now=0.0, drained=True)
    assert not eager.should_flush(batch, now=0.0, drained=False)  # more is queued: grow
    assert not BatchPolicy(1000, 10).should_flush(batch, now=0.0, drained=True)
    assert not eager.should_flush(Batch(0), now=0.0, drained=True)


def test_eager_policy_waits_for_the_minimum_age_before_flushing_a_trickle() -> None:
    policy = BatchPolicy(max_records=3, max_wait_s=0.25, eager=True, min_wait_s=0.05)
    batch = Batch(0)
    batch.add(pending(1), now=1.0)
    assert not policy.should_flush(batch, now=1.01, drained=True)  # too young
    assert policy.seconds_until_due(batch, now=1.01) == pytest.approx(0.04)
    assert policy.should_flush(batch, now=1.05, drained=True)
    assert not policy.should_flush(batch, now=1.05, drained=False)  # more is queued: grow
    assert policy.should_flush(batch, now=1.25, drained=False)  # the age limit still holds
    batch.add(pending(2), now=1.0)
    batch.add(pending(3), now=1.0)
    assert policy.should_flush(batch, now=1.0, drained=False)  # full: at once
    lazy = BatchPolicy(max_records=1000, max_wait_s=0.25, min_wait_s=0.05)
    assert lazy.seconds_until_due(batch, now=1.0) == pytest.approx(0.25)  # not eager


def sized(offset: int, nbytes: int) -> PendingMessage:
    return PendingMessage(offset, 0, b"k", b"v" * (nbytes - 1), [make_record(seconds=offset)])


def test_a_batch_is_full_at_its_byte_bound_minus_one_at_and_plus_one() -> None:
    """Issue 17 B3: bytes bound a batch as well as records (limit - 1, limit, limit + 1)."""
    policy = BatchPolicy(max_records=1000, max_wait_s=10, max_bytes=1000)
    for total, full in ((999, False), (1000, True), (1001, True)):
        batch = Batch(0)
        batch.add(sized(1, 500), now=0.0)
        batch.add(sized(2, total - 500), now=0.0)
        assert batch.byte_count == total
        assert policy.full(batch) is full
        assert policy.should_flush(batch, now=0.0) is full


def test_one_message_over_the_byte_bound_is_a_batch_of_its_own() -> None:
    policy = BatchPolicy(max_records=1000, max_wait_s=10, max_bytes=1000)
    batch = Batch(0)
    batch.add(sized(1, 5000), now=0.0)
    assert policy.full(batch) and policy.should_flush(batch, now=0.0)


def test_flow_control_pauses_on_bytes_at_the_limit_and_resumes_below_half() -> None:
    fc = FlowControl(max_records=5000, max_bytes=8000)
    assert not fc.should_pause(10, 7999)
    assert fc.should_pause(10, 8000)
    assert fc.should_pause(10, 8001)
    assert not fc.should_resume(10, 4000)
    assert fc.should_resume(10, 3999)
    assert not fc.should_resume(2500, 0)  # both bounds must be below half
