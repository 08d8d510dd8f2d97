"""The shared budget's arithmetic: a token bucket as one time, holds, and the adaptive share."""

from __future__ import annotations

import pytest

from batching.pacing.schedule import (
    MIN_FACTOR,
    USAGE_AIM,
    Feedback,
    LaneLimit,
    LaneState,
    adapt,
    hold,
    reserve,
)

LIMIT = LaneLimit(rate=100, burst=20)


def test_a_full_bucket_lets_the_first_batch_go_at_once_and_spaces_the_next_by_its_size() -> None:
    state, first = reserve(LaneState(), LIMIT, 20, now=1000.0)
    assert first == 1000.0
    state, second = reserve(state, LIMIT, 20, now=1000.0)
    assert second == pytest.approx(1000.2)
    state, third = reserve(state, LIMIT, 5, now=1000.0)
    assert third == pytest.approx(1000.4 - 15 / 100)


def test_no_window_of_the_rate_ever_holds_more_than_burst_plus_rate_times_window() -> None:
    state = LaneState()
    starts: list[tuple[float, int]] = []
    for n in range(200):
        amount = (n % 20) + 1
        state, start = reserve(state, LIMIT, amount, now=500.0 + n * 0.01)
        starts.append((start, amount))
    for begin, _ in starts:
        for width in (0.1, 0.5, 1.0, 3.0):
            inside = sum(a for s, a in starts if begin <= s < begin + width)
            assert inside <= LIMIT.burst + LIMIT.rate * width + 1e-6


def test_an_idle_bucket_refills_but_never_beyond_its_burst() -> None:
    state, _ = reserve(LaneState(), LIMIT, 20, now=0.0)
    state, start = reserve(state, LIMIT, 20, now=60.0)
    assert start == 60.0
    state, start = reserve(state, LIMIT, 20, now=60.0)
    assert start == pytest.approx(60.2)


def test_a_hold_stops_everything_until_it_ends_and_the_bucket_refills_from_then() -> None:
    state = hold(LaneState(), LIMIT, until=50.0)
    state, start = reserve(state, LIMIT, 1, now=10.0)
    assert start == pytest.approx(50.0 + 1 / 100)  # empty at 50: one token takes 1/rate
    assert hold(state, LIMIT, until=20.0) == state  # an earlier end never shortens a hold


def test_a_429_slows_the_rate_by_the_share_refused_once_per_interval() -> None:
    stray = adapt(LaneState(), Feedback(throttled=1, retry_after=1, answers=20), now=100.0)
    assert stray.factor == pytest.approx(1 - 0.1 / 20)  # one item of twenty at the edge: a small step
    state = adapt(LaneState(), Feedback(throttled=20, retry_after=1, answers=20), now=100.0)
    assert state.factor == pytest.approx(0.9)  # a whole batch refused: a tenth less
    assert adapt(state, Feedback(throttled=20, answers=20), now=100.5) == state


def test_clean_answers_recover_the_rate_gradually_and_never_above_the_budget() -> None:
    state = LaneState(factor=0.7, adjusted_at=100.0)
    for second in range(1, 7):
        state = adapt(state, Feedback(answers=20), now=100.0 + second)
    assert state.factor == pytest.approx(1.0)
    assert adapt(state, Feedback(answers=20), now=200.0).factor == 1.0


def test_reported_usage_steers_toward_the_aim_without_jumping() -> None:
    high = adapt(LaneState(), Feedback(usage=1.2, answers=1), now=10.0)
    assert high.factor == pytest.approx(USAGE_AIM / 1.2)
    # the same lagging report a second later does not cut again
    assert adapt(high, Feedback(usage=1.2, answers=1), now=11.0).factor == pytest.approx(USAGE_AIM / 1.2)
    low = LaneState(factor=0.5)
    assert adapt(low, Feedback(usage=0.81, answers=1), now=10.0).factor == pytest.approx(0.525)


def test_the_rate_never_falls_below_the_floor() -> None:
    state = LaneState(factor=MIN_FACTOR)
    assert adapt(state, Feedback(throttled=1, answers=1), now=10.0).factor == MIN_FACTOR


def test_a_slower_rate_spaces_reservations_further_apart() -> None:
    state, _ = reserve(LaneState(factor=0.5), LIMIT, 20, now=0.0)
    _, start = reserve(state, LIMIT, 20, now=0.0)
    assert start == pytest.approx(0.4)
