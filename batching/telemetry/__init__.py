"""What the app tells an operator while it works: spans per job step and per `$batch` call, and
metrics (operations by status, Graph's 429s, budget in use, queue age), over OpenTelemetry.

This module is the only door the pipeline uses, and every call here is a no-op returning at
once while telemetry is off (the default in tests): OpenTelemetry itself is loaded only by
`configure` when an exporter is chosen (`TELEMETRY_EXPORTER`: `azure` to Application Insights,
`console` locally). Nothing here may break or slow the work it watches: exporters run on their
own threads, and a failure inside telemetry is logged once and swallowed.

One job is one trace: the HTTP door's span (or a queue job's first intake) starts it, and every
work message the app writes carries its W3C trace context (`WorkMessage.trace`) to the next
delivery. Every span carries `jobId`, so a job is found even where a link is lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

from batching.models import MessageTrace, WorkMessage

if TYPE_CHECKING:
    from batching.coalescer import BatchCoalescer
    from batching.graph.client import BatchResponse, ItemResponse
    from batching.graph.throttling import Priority, RequestCost
    from batching.pacing import Pacer
    from batching.processor import WorkUnit
    from batching.records import OperationOutcome
    from batching.settings import Settings
    from batching.telemetry.recorder import Recorder

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")
_U = TypeVar("_U", bound="WorkUnit")


@dataclass(frozen=True, slots=True)
class JobTrace:
    """Where one job's spans go in this run: its job id and the OpenTelemetry context of its
    `job.run` span (opaque here, so the pipeline never needs OpenTelemetry's types)."""

    job_id: str
    context: object


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """When (Unix ns) a `$batch` call started waiting for the pacer, was let go, was sent and
    was answered."""

    waiting: int
    granted: int
    sent: int
    answered: int


class Step(Protocol):
    """A span in progress, as the pipeline sees it."""

    def set(self, **attributes: str | int | float | bool | None) -> None: ...

    @property
    def trace(self) -> MessageTrace | None: ...


class _NoStep:
    def set(self, **attributes: str | int | float | bool | None) -> None:
        return None

    @property
    def trace(self) -> MessageTrace | None:
        return None


NO_STEP: Final[Step] = _NoStep()
_active: Recorder | None = None


def enabled() -> bool:
    return _active is not None


def now() -> int:
    """The clock spans use (Unix time in ns)."""
    return time.time_ns()


def configure(settings: Settings) -> None:
    """Set telemetry up for this process once, from `TELEMETRY_EXPORTER`; never raises (the app
    runs without telemetry rather than not at all)."""
    global _active
    if _active is not None:
        return
    exporter = settings.telemetry_exporter
    if exporter == "off":
        return
    try:
        from batching.telemetry.exporters import providers

        _active = _recorder(*providers(settings), graph_url=settings.graph_base_url)
    except Exception as error:  # noqa: BLE001 - a bad connection string or a missing package: work goes on
        # Only the kind of error: its message may quote the connection string.
        log.warning(
            "telemetry is off: the %s exporter could not be set up (%s)", exporter, type(error).__name__
        )


def enable(tracer_provider: object, meter_provider: object) -> None:
    """Record through these OpenTelemetry providers from now on (tests use in-memory ones)."""
    global _active
    _active = _recorder(tracer_provider, meter_provider)


def disable() -> None:
    global _active
    _active = None


def _recorder(tracer_provider: object, meter_provider: object, *, graph_url: str | None = None) -> Recorder:
    from batching.telemetry.recorder import DEFAULT_GRAPH_URL, Recorder

    return Recorder(tracer_provider, meter_provider, graph_url=graph_url or DEFAULT_GRAPH_URL)


@contextlib.contextmanager
def step(
    name: str, *, job_id: str | None = None, **attributes: str | int | float | bool | None
) -> Iterator[Step]:
    """A span around one step of a job, current while the step runs, under the job's `job.run`
    span when this run has one (else under whatever span is current)."""
    if _active is None:
        yield NO_STEP
        return
    recorder = _active
    with contextlib.ExitStack() as stack:
        yield _guarded(lambda: stack.enter_context(recorder.step(name, job_id, attributes)), NO_STEP)


def spanned(
    name: str, *, describe: Callable[[_R], Mapping[str, str | int | float | bool | None]]
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """A coroutine function run inside a `name` span, whose attributes `describe` takes from its
    result (the HTTP door's answer: the job id it was given, how many operations, the outcome)."""

    def decorate(function: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(function)
        async def traced(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if _active is None:
                return await function(*args, **kwargs)
            with step(name) as current:
                result = await function(*args, **kwargs)
                attributes: Mapping[str, str | int | float | bool | None] = _guarded(
                    lambda: describe(result), {}
                )
                current.set(**attributes)
                return result

        return traced

    return decorate


@contextlib.contextmanager
def job_runs(units: Sequence[WorkUnit]) -> Iterator[None]:
    """A `job.run` span per job while the processor runs `units`, each under the trace its work
    message carried; the job steps inside find theirs by job id."""
    if _active is None:
        yield
        return
    recorder = _active
    with contextlib.ExitStack() as stack:
        _guarded(lambda: stack.enter_context(recorder.job_runs(units)), None)
        yield


def traces_for(pairs: Iterable[tuple[str, str]]) -> dict[str, JobTrace] | None:
    """For the coalescer: which job's trace each item key (`pairs`: key, job id) belongs to."""
    if _active is None:
        return None
    return _guarded(lambda: _active.traces_for(pairs) if _active else None, None)


def batch_answered(
    response: BatchResponse,
    items: Sequence[tuple[JobTrace | None, ItemResponse]],
    *,
    timing: BatchTiming,
    priority: Priority,
    cost: RequestCost,
) -> None:
    """A `$batch` call's answer: a `pace.wait` and a `graph.batch` span in each job's trace it
    carried work of, and the call's metrics."""
    if _active is not None:
        recorder = _active
        _guarded(lambda: recorder.batch_answered(response, items, timing, priority, cost), None)


def recorded(job_id: str, outcomes: Sequence[OperationOutcome], writing: Awaitable[_T]) -> Awaitable[_T]:
    """`writing` (the rows' write) inside a `job.record` span; its outcomes are counted once written."""
    if _active is None:
        return writing
    return _active.recorded(job_id, outcomes, writing)


def count_outcomes(outcomes: Iterable[OperationOutcome]) -> None:
    """Rows written outside a processor run (rejections, messages given up): counted by status."""
    if _active is not None:
        recorder = _active
        _guarded(lambda: recorder.count_outcomes(outcomes), None)


def received(
    unit: _U | None,
    *,
    source: str,
    queue: str,
    dequeue_count: int,
    inserted_on: datetime | None,
    started: int,
) -> _U | None:
    """A queue message taken in (`job.intake`, under the trace its work message carried) and its
    queue age; the unit comes back carrying the intake span as its trace."""
    if _active is None:
        return unit
    recorder = _active
    trace = _guarded(
        lambda: recorder.received(unit, source, queue, dequeue_count, inserted_on, started), None
    )
    return replace(unit, trace=trace) if unit is not None else None


def stamp(message: WorkMessage, delay_seconds: float) -> WorkMessage:
    """The message carrying the current trace context and when it is due, for the next delivery."""
    if _active is None:
        return message
    recorder = _active
    trace = _guarded(lambda: recorder.message_trace(delay_seconds), None)
    return message if trace is None else message.model_copy(update={"trace": trace})


def watch(*, pacer: Pacer | None = None, coalescer: BatchCoalescer | None = None) -> None:
    """Report this pacer's budget in use and this coalescer's backlog as gauges."""
    if _active is not None:
        _active.watch(pacer, coalescer)


def _guarded(call: Callable[[], _T], fallback: _T) -> _T:
    """Telemetry never fails the work it watches: a failure is logged once and ignored."""
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - logged (by kind only: a message may quote a value)
        _warn_once(error)
        return fallback


_warned: set[str] = set()


def _warn_once(error: Exception) -> None:
    kind = type(error).__name__
    if kind not in _warned:
        _warned.add(kind)
        log.warning("telemetry failed (%s); the work goes on", kind)


__all__ = [
    "NO_STEP",
    "BatchTiming",
    "JobTrace",
    "Step",
    "batch_answered",
    "configure",
    "count_outcomes",
    "disable",
    "enable",
    "enabled",
    "job_runs",
    "now",
    "received",
    "recorded",
    "spanned",
    "stamp",
    "step",
    "traces_for",
    "watch",
]
