import pytest

from consumer.observe.lag import LagSample, LagStatus, LagWindow, classify_lag

W = 300.0


def s(at: float, committed: int | None, hw: int) -> LagSample:
    return LagSample(at, committed, hw)


def window(*samples: LagSample, window_s: float = W) -> LagWindow:
    w = LagWindow(window_s=window_s)
    for sample in samples:
        w.add(sample)
    return w


def test_lag_is_watermark_minus_committed_clamped_and_none_is_zero() -> None:
    assert s(0, 10, 15).lag == 5
    assert s(0, 20, 15).lag == 0
    assert s(0, None, 7).lag == 7


def test_empty_window_is_ok() -> None:
    assert LagWindow().status(now=1e9) is LagStatus.OK
    assert classify_lag([], now=0, window_s=W, last_commit_change_at=None) is LagStatus.OK


def test_newest_lag_zero_is_ok_even_after_long_silence() -> None:
    w = window(s(0, 100, 150), s(100, 100, 150), s(200, 200, 200))
    assert w.status(now=10_000) is LagStatus.OK


def test_committed_moving_and_lag_decreasing_is_ok() -> None:
    w = window(s(0, 100, 200), s(10, 150, 220), s(20, 210, 230))
    assert w.status(now=20) is LagStatus.OK


def test_warn_when_committed_moves_but_lag_never_decreases() -> None:
    w = window(s(0, 100, 110), s(10, 110, 125), s(20, 120, 135))
    assert [x.lag for x in w.samples()] == [10, 15, 15]
    assert w.status(now=20) is LagStatus.WARN


def test_warn_needs_three_samples() -> None:
    w = window(s(0, 100, 110), s(10, 110, 125))
    assert w.status(now=10) is LagStatus.OK


def test_warn_needs_committed_to_move() -> None:
    # Frozen offset but too short for STALL: not a warning, just too early to judge.
    w = window(s(0, 100, 110), s(10, 100, 120), s(20, 100, 130))
    assert w.status(now=20) is LagStatus.OK


def test_one_lag_decrease_clears_warn() -> None:
    w = window(s(0, 100, 110), s(10, 110, 130), s(20, 125, 140), s(30, 140, 160))
    assert [x.lag for x in w.samples()] == [10, 20, 15, 20]
    assert w.status(now=30) is LagStatus.OK


def test_stall_boundary_is_half_the_window() -> None:
    base = [s(0, 100, 110), s(60, 100, 120), s(120, 100, 130)]
    assert window(*base, s(149.9, 100, 140)).status(now=149.9) is LagStatus.OK
    assert window(*base, s(150, 100, 140)).status(now=150) is LagStatus.STALL


def test_stall_counts_from_the_last_commit_change() -> None:
    w = window(s(0, 90, 140), s(50, 100, 120), s(150, 100, 130), s(199, 100, 130))
    assert w.last_commit_change_at() == 50
    assert w.status(now=199) is LagStatus.OK
    w.add(s(200, 100, 130))
    assert w.status(now=200) is LagStatus.STALL


def test_idle_partition_that_just_got_a_message_is_not_stalled_or_stopped() -> None:
    # Committed offset frozen for hours because there was nothing to consume.
    w = LagWindow(window_s=W)
    for t in range(0, 10_000, 60):
        w.add(s(t, 100, 100))
    w.add(s(10_020, 100, 101))
    assert w.status(now=10_020) is LagStatus.OK


def test_stop_boundary_is_strictly_greater_than_the_window() -> None:
    w = window(s(0, 100, 110), s(100, 100, 120), s(200, 100, 130))
    assert w.status(now=300) is LagStatus.STALL
    assert w.status(now=300.001) is LagStatus.STOP


def test_stop_without_any_commit_change_uses_first_sample_time() -> None:
    w = LagWindow(window_s=W)
    for t in range(0, 1000, 50):
        w.add(s(t, 100, 200 + t))
    assert w.last_commit_change_at() is None
    assert w.samples()[0].at == 650  # the first sample aged out, but its time is kept
    assert w.status(now=950) is LagStatus.STOP


def test_pure_evaluate_uses_given_last_commit_change_before_window() -> None:
    samples = [s(400, 100, 150), s(450, 100, 160)]
    assert classify_lag(samples, now=450, window_s=W, last_commit_change_at=140) is LagStatus.STOP
    assert classify_lag(samples, now=450, window_s=W, last_commit_change_at=None) is LagStatus.OK


def test_rewind_detected_and_takes_precedence_over_stop_and_ok() -> None:
    w = window(s(0, 100, 200), s(10, 50, 200), s(20, 50, 200))
    assert w.status(now=20) is LagStatus.REWIND
    assert w.status(now=10_000) is LagStatus.REWIND
    caught_up = window(s(0, 100, 100), s(10, 90, 90))
    assert caught_up.status(now=10) is LagStatus.REWIND


def test_rewind_to_nothing_committed_counts() -> None:
    assert window(s(0, 5, 10), s(10, None, 10)).status(now=10) is LagStatus.REWIND


def test_rewind_ends_once_it_ages_out_of_the_window() -> None:
    w = window(s(0, 100, 200), s(10, 50, 200), s(20, 120, 200))
    assert w.status(now=20) is LagStatus.REWIND
    w.add(s(311, 180, 200))
    assert [x.at for x in w.samples()] == [20, 311]
    assert w.status(now=311) is not LagStatus.REWIND


def test_trimming_keeps_samples_within_window_of_newest() -> None:
    w = window(s(0, 1, 2), s(100, 1, 2), s(200, 1, 2), s(300, 1, 2), window_s=W)
    assert [x.at for x in w.samples()] == [0, 100, 200, 300]  # exactly window_s old stays
    w.add(s(301, 1, 2))
    assert [x.at for x in w.samples()] == [100, 200, 300, 301]


def test_max_samples_bounds_memory() -> None:
    w = LagWindow(window_s=W, max_samples=3)
    for t in range(5):
        w.add(s(t, t, 10))
    assert [x.at for x in w.samples()] == [2, 3, 4]


def test_last_commit_change_at_survives_trimming() -> None:
    w = window(s(0, 1, 5), s(10, 2, 5))
    assert w.last_commit_change_at() == 10
    w.add(s(1000, 2, 5))
    assert [x.at for x in w.samples()] == [1000]
    assert w.last_commit_change_at() == 10
    assert w.status(now=1000) is LagStatus.STOP


def test_first_commit_counts_as_change() -> None:
    w = window(s(0, None, 5), s(10, 0, 5))
    assert w.last_commit_change_at() == 10


def test_out_of_order_sample_is_ignored() -> None:
    w = window(s(10, 1, 5), s(5, 0, 5))
    assert [x.at for x in w.samples()] == [10]
    assert w.last_commit_change_at() is None


@pytest.mark.parametrize(("window_s", "max_samples"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_rejects_bad_configuration(window_s: float, max_samples: int) -> None:
    with pytest.raises(ValueError):
        LagWindow(window_s=window_s, max_samples=max_samples)
