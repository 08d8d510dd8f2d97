"""What a run produced, as the contender saw it and as Graph saw it."""

from __future__ import annotations

from dataclasses import dataclass

from bench.pace.calllog import CallStats


@dataclass(frozen=True)
class RunResult:
    """A contender's own account of one run."""

    operations: int
    completed: int  # operations that succeeded
    failed: int  # operations that ended otherwise
    seconds: float  # from the first send (or submission) to the last answer
    timed_out: bool
    started_at: float  # epoch seconds: time zero of the emulator's call log
    peak_rss_mib: float | None = None  # of the busiest dev host, for product runs


@dataclass(frozen=True)
class Row:
    """One line of the table: a run, its bound, and what Graph saw."""

    scenario: str
    contender: str
    result: RunResult
    calls: CallStats
    bound: float | None = None  # seconds the emulated limit allows at best
    rate: float | None = None  # the limit line of the plot (writes/s); None: not plotted


@dataclass(frozen=True)
class Check:
    """A scenario with a target: the measured value, the target, and whether it was met."""

    scenario: str
    measure: str
    value: str
    target: str
    passed: bool
