"""The spans and metrics behind `batching.telemetry`, written with OpenTelemetry's API.

Attributes are ids, counts, statuses and durations only: never a body, a header value, a URL
of an operation or a token. Span and attribute names are what an operator types in KQL
(`customDimensions.jobId`); see README "Operating".
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeVar, cast
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from batching.graph.throttling import NO_ANSWER, Priority, ThrottleSignal
from batching.models import MessageTrace
from batching.records import OperationStatus
from batching.telemetry import BatchTiming, JobTrace, Step

if TYPE_CHECKING:
    from batching.coalescer import BatchCoalescer
    from batching.graph.client import BatchResponse, ItemResponse
    from batching.graph.throttling import RequestCost
    from batching.pacing import Pacer
    from batching.processor import WorkUnit
    from batching.records import OperationOutcome

log = logging.getLogger(__name__)

INSTRUMENTATION: Final = "batching"
DEFAULT_GRAPH_URL: Final = "https://graph.microsoft.com/v1.0"
_KINDS: Final = {
    "job.intake": SpanKind.CONSUMER,
    "graph.batch": SpanKind.CLIENT,
    "job.requeue": SpanKind.PRODUCER,
}
# The job.run spans of the processor run this task belongs to, by job id.
_run_traces: ContextVar[Mapping[str, JobTrace] | None] = ContextVar("batching_run_traces", default=None)
_propagator: Final = TraceContextTextMapPropagator()
_T = TypeVar("_T")
Attributes = Mapping[str, str | int | float | bool | None]


class _Step:
    def __init__(self, span: Span) -> None:
        self._span = span

    def set(self, **attributes: str | int | float | bool | None) -> None:
        self._span.set_attributes(_clean(attributes))

    @property
    def trace(self) -> MessageTrace | None:
        return _message_trace(self._span)


class Recorder:
    """One process's tracer and meter, and the instruments the pipeline reports to."""

    def __init__(
        self, tracer_provider: object, meter_provider: object, *, graph_url: str = DEFAULT_GRAPH_URL
    ) -> None:
        self._tracer = cast(TracerProvider, tracer_provider).get_tracer(INSTRUMENTATION)
        meter = cast(MeterProvider, meter_provider).get_meter(INSTRUMENTATION)
        self._batch_url = graph_url.rstrip("/") + "/$batch"
        where = urlsplit(self._batch_url)
        self._graph_host = where.hostname or ""
        self._graph_port = where.port or (443 if where.scheme == "https" else 80)
        self._pacers: list[weakref.ref[Pacer]] = []
        self._coalescers: list[weakref.ref[BatchCoalescer]] = []
        self.operations = meter.create_counter(
            "provisioning.operations", unit="{operation}", description="Operation rows written, by status"
        )
        self.batch_calls = meter.create_counter(
            "graph.batch.calls", unit="{call}", description="$batch calls answered, by HTTP status"
        )
        self.responses = meter.create_counter(
            "graph.responses", unit="{response}", description="Answers to $batch items, by status class"
        )
        self.throttled = meter.create_counter(
            "graph.throttled",
            unit="{response}",
            description="Items Graph answered 429 (a refused call: all of its items)",
        )
        self.pace_wait = meter.create_histogram(
            "pacing.wait", unit="s", description="How long a $batch call waited for the fleet's Graph budget"
        )
        self.queue_age = meter.create_histogram(
            "queue.age", unit="s", description="From a message's due time on the queue to its intake"
        )
        meter.create_observable_gauge(
            "pacing.budget.in_use",
            callbacks=[self._budget_in_use],
            unit="1",
            description="Share of the fleet's Graph budget already reserved, per lane (1: sends wait)",
        )
        meter.create_observable_gauge(
            "pacing.rate",
            callbacks=[self._paced_rate],
            unit="{token}/s",
            description="The rate the fleet is paced at now, per lane (the budget times the adaptive factor)",
        )
        meter.create_observable_gauge(
            "pacing.degraded",
            callbacks=[self._degraded],
            unit="1",
            description="1 while this instance paces itself on its fallback share (pacing table unreachable)",
        )
        meter.create_observable_gauge(
            "coalescer.backlog",
            callbacks=[self._backlog],
            unit="{operation}",
            description="Operations handed in for a $batch and not yet sent, in this process",
        )

    # --- spans -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str, job_id: str | None, attributes: Attributes) -> Iterator[Step]:
        with self._tracer.start_as_current_span(
            name,
            context=_job_context(job_id),
            kind=_KINDS.get(name, SpanKind.INTERNAL),
            attributes=_clean({"jobId": job_id, **attributes}),
            record_exception=False,  # an exception's message may quote what it failed on
            set_status_on_exception=False,
        ) as span:
            try:
                yield _Step(span)
            except BaseException as error:
                _failed(span, error)
                raise

    @contextlib.contextmanager
    def job_runs(self, units: Sequence[WorkUnit]) -> Iterator[None]:
        by_job: dict[str, list[WorkUnit]] = {}
        for unit in units:
            by_job.setdefault(unit.job_id, []).append(unit)
        spans: dict[str, Span] = {}
        traces: dict[str, JobTrace] = {}
        for job_id, group in by_job.items():
            carried = [c for c in (_context_of(unit.trace) for unit in group) if c is not None]
            span = self._tracer.start_span(
                "job.run",
                context=carried[0] if carried else None,
                links=[Link(trace.get_current_span(c).get_span_context()) for c in carried[1:]],
                attributes=_clean(
                    {
                        "jobId": job_id,
                        "operationCount": sum(len(unit.items) for unit in group),
                        "messageCount": len(group),
                        "priority": Priority.named(group[0].priority).header_value,
                    }
                ),
            )
            spans[job_id] = span
            traces[job_id] = JobTrace(job_id, trace.set_span_in_context(span))
        token = _run_traces.set(traces)
        try:
            yield
        except BaseException as error:
            for span in spans.values():
                _failed(span, error)
            raise
        finally:
            _run_traces.reset(token)
            for span in spans.values():
                span.end()

    def traces_for(self, pairs: Iterable[tuple[str, str]]) -> dict[str, JobTrace] | None:
        runs = _run_traces.get()
        if not runs:
            return None
        return {key: runs[job_id] for key, job_id in pairs if job_id in runs}

    def batch_answered(
        self,
        response: BatchResponse,
        items: Sequence[tuple[JobTrace | None, ItemResponse]],
        timing: BatchTiming,
        priority: Priority,
        cost: RequestCost,
    ) -> None:
        signals = [ThrottleSignal.read(answer.status, answer.headers) for _, answer in items]
        if response.status != 200:  # the call itself was refused: its own headers tell why
            refused = ThrottleSignal.read(response.status, response.headers)
            signals = [refused] * len(items)
        classes = [_status_class(answer.status) for _, answer in items]
        throttled = sum(1 for signal in signals if signal.throttled)
        priority_name = priority.header_value
        self.batch_calls.add(1, {"httpStatus": str(response.status), "priority": priority_name})
        for status_class, count in Counter(classes).items():
            self.responses.add(count, {"statusClass": status_class})
        if throttled:
            self.throttled.add(throttled, {"scope": "batch" if response.status == 429 else "item"})
        self.pace_wait.record((timing.granted - timing.waiting) / 1e9, {"priority": priority_name})

        by_job: dict[str, tuple[JobTrace, list[int]]] = {}
        for index, (job_trace, _) in enumerate(items):
            if job_trace is not None:
                by_job.setdefault(job_trace.job_id, (job_trace, []))[1].append(index)
        for job_id, (job_trace, indexes) in by_job.items():
            context = cast(Context, job_trace.context)
            counts = Counter(classes[i] for i in indexes)
            retry_after: list[float] = []
            usage: list[float] = []
            for index in indexes:
                if (seconds := signals[index].retry_after) is not None:
                    retry_after.append(seconds)
                if (share := signals[index].limit_percentage) is not None:
                    usage.append(share)
            shared: dict[str, AttributeValue | None] = {
                "jobId": job_id,
                "operationCount": len(indexes),
                "batchSize": len(items),
                "jobsInBatch": len(by_job),
                "priority": priority_name,
            }
            pace = self._tracer.start_span(
                "pace.wait",
                context=context,
                start_time=timing.waiting,
                attributes=_clean(
                    {
                        **shared,
                        "writes": cost.writes,
                        "units": cost.units,
                        "waitMs": _ms(timing.granted - timing.waiting),
                    }
                ),
            )
            pace.end(end_time=timing.granted)
            call = self._tracer.start_span(
                "graph.batch",
                context=context,
                kind=SpanKind.CLIENT,
                start_time=timing.sent,
                attributes=_clean(
                    {
                        **shared,
                        "clientRequestId": response.client_request_id,
                        "graphRequestId": response.request_id,
                        "httpStatus": response.status,
                        "statusOk": counts["ok"],
                        "status429": counts["429"],
                        "status4xx": counts["4xx"],
                        "status5xx": counts["5xx"],
                        "noAnswer": counts["none"],
                        "retryAfterSeconds": max(retry_after) if retry_after else None,
                        "throttleLimitPercentage": max(usage) if usage else None,
                        "paceWaitMs": _ms(timing.granted - timing.waiting),
                        "http.request.method": "POST",
                        "http.response.status_code": response.status or None,
                        "url.full": self._batch_url,
                        "server.address": self._graph_host,
                        "server.port": self._graph_port,
                    }
                ),
            )
            if response.status != 200:
                call.set_status(Status(StatusCode.ERROR, f"$batch answered {response.status or 'nothing'}"))
            call.end(end_time=timing.answered)

    def recorded(
        self, job_id: str, outcomes: Sequence[OperationOutcome], writing: Awaitable[_T]
    ) -> Awaitable[_T]:
        counts = Counter(_status_name(outcome.status) for outcome in outcomes)

        async def record() -> _T:
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(
                        self.step(
                            "job.record",
                            job_id,
                            {
                                "operationCount": len(outcomes),
                                **{f"rows{name}": n for name, n in counts.items()},
                            },
                        )
                    )
                except Exception as error:  # noqa: BLE001 - the rows are written whatever telemetry does
                    log.debug("no job.record span (%s)", type(error).__name__)
                written = await writing
            try:
                self.count_outcomes(outcomes)
            except Exception as error:  # noqa: BLE001 - counting never fails a write that happened
                log.debug("operations not counted (%s)", type(error).__name__)
            return written

        return record()

    def count_outcomes(self, outcomes: Iterable[OperationOutcome]) -> None:
        for outcome in outcomes:
            status = _status_name(outcome.status)
            attributes = {"status": status}
            if outcome.status in (OperationStatus.FAILED, OperationStatus.REJECTED) and outcome.error_code:
                attributes["errorCode"] = outcome.error_code
            self.operations.add(1, attributes)

    def received(
        self,
        unit: WorkUnit | None,
        source: str,
        queue: str,
        dequeue_count: int,
        inserted_on: datetime | None,
        started: int,
    ) -> MessageTrace | None:
        carried = unit.trace if unit is not None else None
        now = time.time_ns()
        age: float | None = None
        if inserted_on is not None:
            due = (inserted_on if inserted_on.tzinfo else inserted_on.replace(tzinfo=UTC)).timestamp()
            if carried is not None and carried.visible_at is not None:
                due = max(due, carried.visible_at)
            age = max(0.0, started / 1e9 - due)
            self.queue_age.record(age, {"queue": source})
        span = self._tracer.start_span(
            "job.intake",
            context=_context_of(carried),
            kind=SpanKind.CONSUMER,
            start_time=started,
            attributes=_clean(
                {
                    "jobId": unit.job_id if unit is not None else None,
                    "queue": queue,
                    "source": source,
                    "outcome": "accepted" if unit is not None else "rejected",
                    "operationCount": len(unit.items) if unit is not None else None,
                    "priority": Priority.named(unit.priority).header_value if unit is not None else None,
                    "dequeueCount": dequeue_count,
                    "queueAgeSeconds": round(age, 3) if age is not None else None,
                }
            ),
        )
        span.end(end_time=now)
        return _message_trace(span)

    def message_trace(self, delay_seconds: float) -> MessageTrace | None:
        current = _message_trace(trace.get_current_span())
        visible_at = round(time.time() + delay_seconds, 3) if delay_seconds > 0 else None
        if current is None and visible_at is None:
            return None
        return MessageTrace(traceparent=current.traceparent if current else None, visible_at=visible_at)

    # --- gauges ----------------------------------------------------------------------------

    def watch(self, pacer: Pacer | None, coalescer: BatchCoalescer | None) -> None:
        if pacer is not None:
            self._pacers.append(weakref.ref(pacer))
        if coalescer is not None:
            self._coalescers.append(weakref.ref(coalescer))

    def _live_pacers(self) -> list[Pacer]:
        self._pacers = [ref for ref in self._pacers if ref() is not None]
        return [pacer for ref in self._pacers if (pacer := ref()) is not None]

    def _budget_in_use(self, _: CallbackOptions) -> Iterable[Observation]:
        for pacer in self._live_pacers():
            for lane, (in_use, _rate) in pacer.budget().items():
                yield Observation(in_use, {"lane": lane.value})

    def _paced_rate(self, _: CallbackOptions) -> Iterable[Observation]:
        for pacer in self._live_pacers():
            for lane, (_in_use, rate) in pacer.budget().items():
                yield Observation(rate, {"lane": lane.value})

    def _degraded(self, _: CallbackOptions) -> Iterable[Observation]:
        for pacer in self._live_pacers():
            yield Observation(1 if pacer.degraded else 0)

    def _backlog(self, _: CallbackOptions) -> Iterable[Observation]:
        self._coalescers = [ref for ref in self._coalescers if ref() is not None]
        for ref in self._coalescers:
            coalescer = ref()
            if coalescer is not None:
                yield Observation(coalescer.backlog)


def _job_context(job_id: str | None) -> Context | None:
    runs = _run_traces.get()
    if job_id is None or not runs or job_id not in runs:
        return None  # the current context
    return cast(Context, runs[job_id].context)


def _context_of(carried: MessageTrace | None) -> Context | None:
    if carried is None or carried.traceparent is None:
        return None
    context = _propagator.extract({"traceparent": carried.traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _message_trace(span: Span) -> MessageTrace | None:
    context = span.get_span_context()
    if not context.is_valid:
        return None
    flags = int(context.trace_flags)
    return MessageTrace(traceparent=f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}")


def _failed(span: Span, error: BaseException) -> None:
    kind = type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


def _clean(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {name: value for name, value in attributes.items() if value is not None}


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 1)


def _status_class(status: int) -> str:
    if status == NO_ANSWER:
        return "none"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return "ok"


def _status_name(status: OperationStatus) -> str:
    """Rows still Pending after a run were put back on the queue to be tried again."""
    return "Requeued" if status is OperationStatus.PENDING else status.value
