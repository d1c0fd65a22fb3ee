"""The commit bookkeeping: never beyond flushed, never twice at once, never backwards."""

from consumer.pipeline.offsets import CommitBook


def book(*partitions: int) -> CommitBook:
    b = CommitBook(interval_s=0.2)
    for p in partitions:
        b.assign(p)
    return b


def test_due_is_the_flushed_offset_of_assigned_partitions_only() -> None:
    b = book(0, 1)
    assert b.due({0: 10, 1: None, 7: 99}) == {0: 10}


def test_an_offset_in_flight_is_not_due_again_until_it_fails() -> None:
    b = book(0)
    b.requested({0: 10})
    assert b.due({0: 10}) == {}
    b.failed(0)
    assert b.due({0: 10}) == {0: 10}


def test_a_newer_flush_is_due_while_an_older_commit_is_in_flight() -> None:
    b = book(0)
    b.requested({0: 10})
    assert b.due({0: 15}) == {0: 15}


def test_acknowledged_offset_is_not_due_and_late_acks_never_move_it_back() -> None:
    b = book(0)
    b.requested({0: 20})
    b.acknowledged(0, 20)
    assert b.committed(0) == 20
    assert b.due({0: 20}) == {}
    b.acknowledged(0, 10)  # an older async commit answering late
    assert b.committed(0) == 20


def test_ack_of_an_older_offset_keeps_the_newer_request_in_flight() -> None:
    b = book(0)
    b.requested({0: 10})
    b.requested({0: 15})
    b.acknowledged(0, 10)
    assert b.due({0: 15}) == {}
    b.acknowledged(0, 15)
    assert b.committed(0) == 15


def test_only_restricts_to_the_named_partitions() -> None:
    b = book(0, 1, 2)
    assert b.due({0: 1, 1: 2, 2: 3}, only=[1, 2, 5]) == {1: 2, 2: 3}


def test_forgotten_partition_has_no_state_and_ignores_acks() -> None:
    b = book(0)
    b.acknowledged(0, 5)
    b.forget(0)
    assert b.committed(0) is None
    b.acknowledged(0, 9)
    b.failed(0)
    assert b.due({0: 9}) == {}
    b.assign(0)  # re-assigned later: starts clean, the broker's offset is the truth
    assert b.due({0: 9}) == {0: 9}


def test_commit_interval_policy() -> None:
    b = book()
    assert b.is_time(100.0)
    assert not b.is_time(100.1)
    assert b.is_time(100.2)
    assert not b.is_time(100.3)
