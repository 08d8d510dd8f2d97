from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batching.graph.throttling import parse_retry_after
from batching.retry import RetryPolicy

NOW = datetime(2026, 11, 22, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10", 10.0),
        ("2.128", 2.128),
        ("0.249", 0.249),
        ("30,120", 30.0),
        (" 5 , 9", 5.0),
        ("Sun, 22 Nov 2026 18:00:07 GMT", 7.0),
        ("Sun, 22 Nov 2026 17:59:00 GMT", 0.0),
        ("-3", 0.0),
    ],
)
def test_retry_after_forms_graph_sends(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf"])
def test_unreadable_retry_after_means_no_hint(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_graph_retry_after_wins_over_backoff() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=2, cap_seconds=60, random=lambda: 0.0)
    assert policy.delay(3, "1.5") == 1.5


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    low = RetryPolicy(max_attempts=9, base_seconds=2, cap_seconds=20, random=lambda: 0.0)
    high = RetryPolicy(max_attempts=9, base_seconds=2, cap_seconds=20, random=lambda: 1.0)
    assert [low.delay(n, None) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [high.delay(n, None) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert high.delay(10, None) == 20.0


def test_attempts_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)
    assert policy.is_transient(429)
    assert policy.is_transient(503)
    assert policy.is_transient(504)
    assert policy.is_transient(0)
    assert not policy.is_transient(400)
