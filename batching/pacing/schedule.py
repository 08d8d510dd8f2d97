"""The arithmetic of a shared send budget, with no I/O so every rule can be tested alone.

Each lane (Graph's write limit, and its resource-unit limit for reads) is a token bucket kept as
one number, the *theoretical arrival time* (`tat`: when the bucket is full again, the generic
cell rate algorithm). Reserving `n` tokens moves `tat` on by `n / rate` and answers when the
caller may send; so one conditional write per `$batch` keeps every instance inside one budget.

On top of the bucket: Graph's own word (`hold_until`, from a 429's Retry-After: nobody sends
before it, and the bucket is taken as empty then), and an adaptive `factor` of the configured
rate that drops on 429s, follows `x-ms-throttle-limit-percentage` toward `USAGE_AIM`, and
climbs back while answers are clean. The factor never exceeds 1: the configured rate is a cap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

MIN_FACTOR: Final = 0.1
# On 429s the rate drops in proportion to the share of answers refused: a stray item (clock or
# network jitter at the edge of the budget) costs half a percent, a refused batch a tenth;
# 429s that go on cut again every second, and Graph's reported usage does the rest.
THROTTLED_CUT: Final = 0.1
RECOVERY_STEP: Final = 0.05  # added per clean second
MAX_GROWTH: Final = 1.05  # largest rise per second while Graph reports usage
USAGE_AIM: Final = 0.98  # share of Graph's limit the app steers toward when Graph reports usage
ADJUST_INTERVAL_SECONDS: Final = 1.0


class Lane(StrEnum):
    """A limit Graph counts separately; items of a batch draw from the lane they belong to."""

    WRITES = "Writes"
    UNITS = "Units"


@dataclass(frozen=True, slots=True)
class LaneLimit:
    """The configured budget of a lane: tokens per second at factor 1, and bucket size."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")


@dataclass(frozen=True, slots=True)
class LaneState:
    tat: float = 0.0
    hold_until: float = 0.0
    factor: float = 1.0
    adjusted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Feedback:
    """What answers said about one lane since it was last reported."""

    throttled: int = 0  # items (or whole calls) answered 429
    retry_after: float | None = None
    usage: float | None = None  # x-ms-throttle-limit-percentage, highest seen
    answers: int = 0  # items answered in this lane

    def merge(self, other: Feedback) -> Feedback:
        return Feedback(
            throttled=self.throttled + other.throttled,
            retry_after=_highest(self.retry_after, other.retry_after),
            usage=_highest(self.usage, other.usage),
            answers=self.answers + other.answers,
        )

    @property
    def refused_share(self) -> float:
        return min(1.0, self.throttled / max(1, self.answers))

    @property
    def empty(self) -> bool:
        return self.answers == 0 and not self.throttled


def _highest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def reserve(state: LaneState, limit: LaneLimit, amount: float, now: float) -> tuple[LaneState, float]:
    """Take `amount` tokens; the new state and the time the caller may send."""
    if amount <= 0:
        return state, max(now, state.hold_until)
    rate = limit.rate * state.factor
    burst = max(limit.burst, amount)  # a request larger than the bucket still goes, alone
    start = max(now, state.hold_until, state.tat - (burst - amount) / rate)
    return replace(state, tat=max(state.tat, start) + amount / rate), start


def hold(state: LaneState, limit: LaneLimit, until: float) -> LaneState:
    """Graph closed the window until `until`: nobody sends before, and the bucket refills from then."""
    if until <= state.hold_until:
        return state
    empty_at_until = until + limit.burst / (limit.rate * state.factor)
    return replace(state, hold_until=until, tat=max(state.tat, empty_at_until))


def adapt(state: LaneState, feedback: Feedback, now: float) -> LaneState:
    """Slow down on 429s and high reported usage; recover gradually when answers are clean."""
    if feedback.empty or now - state.adjusted_at < ADJUST_INTERVAL_SECONDS:
        return state
    if feedback.throttled:
        factor = state.factor * (1 - THROTTLED_CUT * feedback.refused_share)
    elif feedback.usage is not None:
        # Graph reports usage over its own window, which lags: above the aim the rate is set
        # (not multiplied) to the share that would meet it, so a slow window never compounds.
        share = USAGE_AIM / max(feedback.usage, 1e-6)
        factor = min(state.factor, share) if share < 1 else state.factor * min(MAX_GROWTH, share)
    else:
        factor = state.factor + RECOVERY_STEP
    factor = min(1.0, max(MIN_FACTOR, factor))
    if factor == state.factor:
        return state
    return replace(state, factor=factor, adjusted_at=now)
