"""Telemetry: the spans and metrics an operator reads, through OpenTelemetry's in-memory
exporters and httpx.MockTransport behind the real Graph client; and that telemetry off, or
failing, changes nothing about the work."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.identity import ManagedIdentityCredential
from azure.storage.queue.aio import QueueClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import JsonValue

from batching import telemetry
from batching.coalescer import BatchCoalescer
from batching.graph.auth import GraphTokenAuth
from batching.graph.client import BatchRequestItem, GraphBatchClient, build_http_client
from batching.graph.throttling import Priority, RequestCost
from batching.intake import Rejection, parse_job, read_work_message
from batching.models import MessageTrace, Operation, WorkItem, WorkMessage
from batching.pacing import Lane, LaneLimit, MemoryPaceStore, Pacer
from batching.processor import WorkUnit
from batching.records import OperationOutcome, OperationStatus
from batching.settings import Settings
from batching.telemetry.exporters import console_providers, entra_credential
from batching.telemetry.recorder import Recorder
from batching.workqueue import MAX_MESSAGE_JSON_BYTES, WorkQueue, pack_work

ROOT = Path(__file__).resolve().parents[2]
GRAPH = httpx.URL("https://graph.microsoft.com/v1.0")
CARRIED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECRET = "s3cret-Passw0rd"


class _Token:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


class _Recording:
    def __init__(self, spans: InMemorySpanExporter, metrics: InMemoryMetricReader) -> None:
        self.spans = spans
        self.metrics = metrics

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            found.append((dict(point.attributes or {}), getattr(point, "value", point)))
        return found


@pytest.fixture
def recording() -> Iterator[_Recording]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.enable(tracer_provider, MeterProvider(metric_readers=[metrics]))
    try:
        yield _Recording(spans, metrics)
    finally:
        telemetry.disable()


def _coalescer(answer: Any = None) -> BatchCoalescer:
    """A coalescer whose Graph answers each item 204, or what `answer(item)` says."""

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        responses = [answer(item) if answer else {"id": item["id"], "status": 204} for item in items]
        return httpx.Response(200, json={"responses": responses}, headers={"request-id": "graph-req-1"})

    http = build_http_client(
        GRAPH, GraphTokenAuth(_Token(), GRAPH), timeout_seconds=5, transport=httpx.MockTransport(handler)
    )
    return BatchCoalescer(GraphBatchClient(http), linger_seconds=0.01, max_wait_seconds=1)


def _unit(job_id: str, count: int, *, trace: MessageTrace | None = None) -> WorkUnit:
    items = [
        WorkItem(operation=Operation(id=f"op{i}", method="PATCH", url=f"/users/u{i}", body={"jobTitle": "x"}))
        for i in range(count)
    ]
    return WorkUnit(job_id, None, items, "high", trace=trace)


def _requests(job_id: str, count: int) -> list[BatchRequestItem]:
    body = {"passwordProfile": {"password": SECRET}}
    return [
        BatchRequestItem(f"{job_id}\nop{i}", "PATCH", f"/users/ada{i}@contoso.com", {}, body)
        for i in range(count)
    ]


async def test_each_job_in_a_shared_batch_gets_its_own_pace_and_batch_spans_with_its_counts(
    recording: _Recording,
) -> None:
    def answer(item: dict[str, Any]) -> dict[str, Any]:
        if item["url"] == "/users/ada1@contoso.com" and item["id"] == "5":  # job-b's op1
            return {"id": item["id"], "status": 429, "headers": {"Retry-After": "2.5"}, "body": None}
        return {"id": item["id"], "status": 204}

    coalescer = _coalescer(answer)
    units = [_unit("job-a", 3, trace=MessageTrace(traceparent=CARRIED)), _unit("job-b", 2)]
    requests = _requests("job-a", 3) + _requests("job-b", 2)
    with telemetry.job_runs(units):
        traces = telemetry.traces_for((r.key, r.key.split("\n")[0]) for r in requests)
        answers = await coalescer.send(requests, priority=Priority.HIGH, traces=traces)

    assert [answers[r.key].status for r in requests] == [204, 204, 204, 204, 429]
    runs = {span.attributes["jobId"]: span for span in recording.named("job.run") if span.attributes}
    assert set(runs) == {"job-a", "job-b"}
    assert f"{runs['job-a'].context.trace_id:032x}" == CARRIED.split("-")[1]  # the carried trace goes on
    assert runs["job-a"].parent is not None
    assert f"{runs['job-a'].parent.span_id:016x}" == CARRIED.split("-")[2]
    assert runs["job-a"].attributes == {
        "jobId": "job-a",
        "operationCount": 3,
        "messageCount": 1,
        "priority": "High",
    }

    calls = {span.attributes["jobId"]: span for span in recording.named("graph.batch") if span.attributes}
    assert set(calls) == {"job-a", "job-b"}
    for job_id, call in calls.items():
        assert call.parent is not None
        assert call.parent.span_id == runs[job_id].context.span_id
        assert call.attributes is not None
        assert call.attributes["graphRequestId"] == "graph-req-1"
        assert call.attributes["batchSize"] == 5
        assert call.attributes["jobsInBatch"] == 2
        assert call.attributes["httpStatus"] == 200
        assert call.attributes["priority"] == "High"
    assert calls["job-a"].attributes is not None
    assert calls["job-b"].attributes is not None
    assert calls["job-a"].attributes["clientRequestId"] == calls["job-b"].attributes["clientRequestId"]
    assert calls["job-a"].attributes["operationCount"] == 3
    assert calls["job-a"].attributes["statusOk"] == 3
    assert "retryAfterSeconds" not in calls["job-a"].attributes
    assert calls["job-b"].attributes["operationCount"] == 2
    assert (calls["job-b"].attributes["statusOk"], calls["job-b"].attributes["status429"]) == (1, 1)
    assert calls["job-b"].attributes["retryAfterSeconds"] == 2.5

    waits = {span.attributes["jobId"]: span for span in recording.named("pace.wait") if span.attributes}
    assert set(waits) == {"job-a", "job-b"}
    assert all(wait.attributes and wait.attributes["writes"] == 5 for wait in waits.values())
    assert all(
        wait.end_time and call.start_time and wait.end_time <= call.start_time
        for wait, call in zip((waits["job-a"], waits["job-b"]), (calls["job-a"], calls["job-b"]), strict=True)
    )

    assert recording.points("graph.throttled") == [({"scope": "item"}, 1)]
    assert recording.points("graph.batch.calls") == [({"httpStatus": "200", "priority": "High"}, 1)]
    assert sorted((a["statusClass"], v) for a, v in recording.points("graph.responses")) == [
        ("429", 1),
        ("ok", 4),
    ]


async def test_no_span_attribute_carries_a_body_or_an_operation_url(recording: _Recording) -> None:
    with (
        telemetry.job_runs([_unit("job-a", 2)]),
        telemetry.step("job.requeue", job_id="job-a", delaySeconds=3),
    ):
        requests = _requests("job-a", 2)
        await _coalescer().send(requests, traces=telemetry.traces_for((r.key, "job-a") for r in requests))
    spans = recording.spans.get_finished_spans()
    assert {span.name for span in spans} == {"job.run", "job.requeue", "pace.wait", "graph.batch"}
    text = json.dumps([dict(span.attributes or {}) for span in spans])
    assert SECRET not in text
    assert "ada0@contoso.com" not in text
    assert "jobTitle" not in text


async def test_a_work_message_sent_inside_a_step_carries_its_trace_and_when_it_is_due(
    recording: _Recording,
) -> None:
    queue = _Queue()
    door = WorkQueue(cast(QueueClient, queue), cast(QueueClient, queue), cast(QueueClient, queue))
    message = pack_work("job-a", None, _unit("job-a", 2).items)[0]
    with telemetry.step("job.requeue", job_id="job-a") as step:
        await door.send(message, delay_seconds=30)
    sent = WorkMessage.model_validate_json(queue.texts[0])
    assert sent.trace is not None
    assert step.trace is not None
    assert sent.trace.traceparent == step.trace.traceparent
    assert sent.trace.visible_at is not None
    assert 25 < sent.trace.visible_at - time.time() <= 30.001  # due in 30 s, to the millisecond
    assert sent.model_copy(update={"trace": None}) == message  # nothing else changes


async def test_with_telemetry_off_work_messages_are_sent_exactly_as_before() -> None:
    queue = _Queue()
    door = WorkQueue(cast(QueueClient, queue), cast(QueueClient, queue), cast(QueueClient, queue))
    message = pack_work("job-a", None, _unit("job-a", 2).items)[0]
    with telemetry.step("job.requeue", job_id="job-a") as step:
        await door.send(message, delay_seconds=30)
    assert step is telemetry.NO_STEP
    assert queue.texts == [message.model_dump_json(by_alias=True, exclude={"trace"})]
    assert "trace" not in json.loads(queue.texts[0])


@pytest.mark.parametrize(
    "trace",
    [
        {"traceparent": "not a traceparent"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": CARRIED + "\n"},
        {"traceparent": CARRIED, "visibleAt": time.time() + 30 * 24 * 3600},
        {"traceparent": CARRIED, "baggage": "x"},
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ],
)
def test_a_work_message_with_a_trace_that_is_not_one_still_runs_without_it(trace: Any) -> None:
    document = json.loads(pack_work("job-a", None, _unit("job-a", 1).items)[0].model_dump_json(by_alias=True))
    document["trace"] = trace
    work = read_work_message(json.dumps(document).encode())
    assert work is not None
    assert work.trace is None
    assert work.items[0].operation.id == "op0"


def test_a_valid_trace_in_a_work_message_is_kept() -> None:
    document = json.loads(pack_work("job-a", None, _unit("job-a", 1).items)[0].model_dump_json(by_alias=True))
    document["trace"] = {"traceparent": CARRIED, "visibleAt": 1_763_880_000.5}
    work = read_work_message(json.dumps(document).encode())
    assert work is not None
    assert work.trace == MessageTrace(traceparent=CARRIED, visible_at=1_763_880_000.5)


def test_a_producer_cannot_put_a_trace_on_the_public_queue() -> None:
    job = {
        "jobId": "j1",
        "trace": {"traceparent": CARRIED},
        "operations": [{"id": "a", "method": "GET", "url": "/users"}],
    }
    assert isinstance(parse_job(json.dumps(job)), Rejection)


def test_a_packed_message_still_fits_a_queue_message_once_it_carries_the_largest_trace() -> None:
    body: JsonValue = {"note": "x" * 400}
    items = [
        WorkItem(operation=Operation(id=f"op{i}", method="PATCH", url=f"/users/u{i}", body=body))
        for i in range(400)
    ]
    largest = MessageTrace.model_construct(
        traceparent=f"00-{'f' * 32}-{'f' * 16}-ff", visible_at=4_102_444_799.999
    )
    for message in pack_work("job-a", "c" * 256, items):
        stamped = message.model_copy(update={"trace": largest})
        assert len(stamped.model_dump_json(by_alias=True).encode()) <= MAX_MESSAGE_JSON_BYTES


async def test_rows_written_are_counted_by_status_inside_a_record_span(recording: _Recording) -> None:
    rows = [
        OperationOutcome("a", OperationStatus.SUCCEEDED, "PATCH", "/users/a"),
        OperationOutcome(
            "b", OperationStatus.FAILED, "PATCH", "/users/b", error_code="Request_ResourceNotFound"
        ),
        OperationOutcome("c", OperationStatus.PENDING, "PATCH", "/users/c"),
    ]

    async def write() -> str:
        return "written"

    with telemetry.job_runs([_unit("job-a", 3)]):
        assert await telemetry.recorded("job-a", rows, write()) == "written"
    (record,) = recording.named("job.record")
    assert record.attributes == {
        "jobId": "job-a",
        "operationCount": 3,
        "rowsSucceeded": 1,
        "rowsFailed": 1,
        "rowsRequeued": 1,
    }
    assert sorted(
        (attributes["status"], attributes.get("errorCode"), value)
        for attributes, value in recording.points("provisioning.operations")
    ) == [("Failed", "Request_ResourceNotFound", 1), ("Requeued", None, 1), ("Succeeded", None, 1)]


async def test_a_failed_write_marks_its_record_span_and_is_not_counted(recording: _Recording) -> None:
    async def write() -> None:
        raise ConnectionError("storage down")

    with pytest.raises(ConnectionError):
        await telemetry.recorded(
            "job-a", [OperationOutcome("a", OperationStatus.SUCCEEDED, "GET", "/users")], write()
        )
    (record,) = recording.named("job.record")
    assert record.status.status_code.name == "ERROR"
    assert record.attributes is not None
    assert record.attributes["error.type"] == "ConnectionError"
    assert recording.points("provisioning.operations") == []


async def test_budget_in_use_and_the_paced_rate_are_gauges_per_lane(recording: _Recording) -> None:
    limits = {Lane.WRITES: LaneLimit(20, 20), Lane.UNITS: LaneLimit(300, 300)}
    pacer = Pacer(MemoryPaceStore(), limits, clock=lambda: 1_000_000.0)  # time stands still
    telemetry.watch(pacer=pacer)
    await pacer.acquire(RequestCost(writes=10, units=10))
    in_use = {attributes["lane"]: value for attributes, value in recording.points("pacing.budget.in_use")}
    assert in_use == {"Writes": 0.5, "Units": pytest.approx(10 / 300)}
    rates = {attributes["lane"]: value for attributes, value in recording.points("pacing.rate")}
    assert rates == {"Writes": 20.0, "Units": 300.0}
    assert recording.points("pacing.degraded") == [({}, 0)]


class _FailingSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("ingestion unreachable")


class _FailingMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        raise ConnectionError("ingestion unreachable")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


async def test_a_failing_exporter_or_a_failure_inside_telemetry_never_fails_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_FailingSpans()))
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(_FailingMetrics(), export_interval_millis=3_600_000)]
    )
    telemetry.enable(tracer_provider, meter_provider)
    try:
        requests = _requests("job-a", 3)
        with telemetry.job_runs([_unit("job-a", 3)]):
            answers = await _coalescer().send(
                requests, traces=telemetry.traces_for((r.key, "job-a") for r in requests)
            )
        assert {answer.status for answer in answers.values()} == {204}
        meter_provider.force_flush()

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in telemetry")

        monkeypatch.setattr(Recorder, "batch_answered", broken)
        monkeypatch.setattr(Recorder, "received", broken)
        answers = await _coalescer().send(requests)
        assert {answer.status for answer in answers.values()} == {204}
        unit = _unit("job-a", 1)
        kept = telemetry.received(
            unit, source="work", queue="q", dequeue_count=1, inserted_on=None, started=0
        )
        assert kept is not None
        assert kept.items == unit.items
    finally:
        telemetry.disable()
        meter_provider.shutdown()
        tracer_provider.shutdown()


def test_console_exporter_prints_one_json_line_per_span_and_per_metric_point() -> None:
    out = io.StringIO()
    tracer_provider, meter_provider = console_providers(out)
    telemetry.enable(tracer_provider, meter_provider)
    try:
        telemetry.count_outcomes([OperationOutcome("a", OperationStatus.SUCCEEDED, "GET", "/users")])
        with telemetry.step("job.requeue", job_id="job-a", delaySeconds=4.0):
            pass
        tracer_provider.force_flush()
        meter_provider.force_flush()
    finally:
        telemetry.disable()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (span,) = [line for line in lines if "span" in line]
    assert span["span"] == "job.requeue"
    assert span["kind"] == "PRODUCER"
    assert span["attributes"] == {"jobId": "job-a", "delaySeconds": 4.0}
    assert len(span["traceId"]) == 32
    assert span["parentId"] is None
    metrics = [line for line in lines if line.get("metric") == "provisioning.operations"]
    assert metrics[0] == (  # printed on flush, and again (cumulative) on shutdown
        {
            "metric": "provisioning.operations",
            "unit": "{operation}",
            "attributes": {"status": "Succeeded"},
            "value": 1,
        }
    )


def test_telemetry_is_off_unless_an_exporter_is_chosen() -> None:
    assert Settings().telemetry_exporter == "off"
    assert Settings.model_validate({"TELEMETRY_EXPORTER": "console"}).telemetry_exporter == "console"
    with pytest.raises(ValueError, match=r"TELEMETRY_EXPORTER"):
        Settings.model_validate({"TELEMETRY_EXPORTER": "loud"})
    telemetry.configure(Settings())
    assert not telemetry.enabled()


def test_telemetry_signs_in_with_the_identity_the_authentication_string_names() -> None:
    named = entra_credential("Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555", None)
    assert isinstance(named, ManagedIdentityCredential)
    assert isinstance(
        entra_credential("Authorization=AAD", "66666666-2222-3333-4444-555555555555"),
        ManagedIdentityCredential,
    )
    assert entra_credential(None, "66666666-2222-3333-4444-555555555555") is None
    assert entra_credential("Authorization=Key", None) is None


class _Queue:
    """What WorkQueue.send needs of a queue client: it keeps the texts sent."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send_message(self, text: str, **kwargs: Any) -> None:
        self.texts.append(text)


async def test_the_readme_and_the_workbook_query_only_what_the_app_reports_and_document_all_of_it(
    recording: _Recording,
) -> None:
    """Every span name, attribute, metric and dimension the KQL in README "Operating" and the
    workbook reads is one the app emits, and the README names every attribute it emits."""
    from batching.records import JobSummary
    from batching.service import Accepted, Invalid, _submitted

    def answer(item: dict[str, Any]) -> dict[str, Any]:
        if item["id"] == "1":
            return {
                "id": "1",
                "status": 429,
                "headers": {"Retry-After": "1", "x-ms-throttle-limit-percentage": "0.9"},
            }
        return {"id": item["id"], "status": 204}

    coalescer = _coalescer(answer)
    pacer = Pacer(MemoryPaceStore(), {Lane.WRITES: LaneLimit(20, 20), Lane.UNITS: LaneLimit(300, 300)})
    telemetry.watch(pacer=pacer, coalescer=coalescer)

    @telemetry.spanned("job.submit", describe=_submitted)
    async def submit(result: Accepted | Invalid) -> Accepted | Invalid:
        return result

    await submit(
        Accepted(
            JobSummary(job_id="job-a", total=2, body_hash=None, correlation_id=None, source="http"), True
        )
    )
    await submit(Invalid([]))
    unit = telemetry.received(
        _unit("job-a", 2),
        source="work",
        queue="q",
        dequeue_count=1,
        inserted_on=datetime.now(UTC),
        started=telemetry.now(),
    )
    assert unit is not None
    with telemetry.job_runs([unit]):
        requests = _requests("job-a", 2)
        await coalescer.send(requests, traces=telemetry.traces_for((r.key, "job-a") for r in requests))
        rows = [
            OperationOutcome(str(n), status, "GET", "/users", error_code="E")
            for n, status in enumerate(OperationStatus)
        ]
        await telemetry.recorded("job-a", rows, _done())
        with telemetry.step(
            "job.requeue", job_id="job-a", operationCount=1, delaySeconds=1.0, reason="claimed"
        ):
            pass

    spans = recording.spans.get_finished_spans()
    emitted_spans = {span.name for span in spans} | {"POST /v1.0/$batch"}
    standard = ("http.", "url.", "server.", "error.")
    attributes = {key for span in spans for key in span.attributes or {} if not key.startswith(standard)}
    data = recording.metrics.get_metrics_data()
    metrics = (
        {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics} if data else set()
    )
    dimensions = {
        key
        for r in (data.resource_metrics if data else [])
        for s in r.scope_metrics
        for m in s.metrics
        for point in m.data.data_points
        for key in point.attributes or {}
    }
    host_functions = {"process_queue_message", "process_work_message", "process_bulk_message"}

    readme = (ROOT / "README.md").read_text()
    operating = readme[readme.index("## Operating") : readme.index("## Measurements")]
    workbook = (ROOT / "infra" / "modules" / "workbook.bicep").read_text()
    for text in (operating, workbook):
        read = set(re.findall(r"(?:customDimensions|\bd)\.(\w+)", text))
        assert read <= attributes | dimensions, read - attributes - dimensions
        names = set(re.findall(r'name == "([^"]+)"', text))
        for listed in re.findall(r"name in \(([^)]*)\)", text):
            names |= set(re.findall(r'"([^"]+)"', listed))
        assert names <= emitted_spans | metrics | host_functions, (
            names - emitted_spans - metrics - host_functions
        )
    assert metrics == {
        "provisioning.operations",
        "graph.batch.calls",
        "graph.responses",
        "graph.throttled",
        "pacing.wait",
        "queue.age",
        "pacing.budget.in_use",
        "pacing.rate",
        "pacing.degraded",
        "coalescer.backlog",
    }
    undocumented = [
        name
        for name in sorted(attributes | dimensions | metrics | emitted_spans)
        if f"`{name}`" not in operating
    ]
    assert undocumented == []


async def _done() -> None:
    return None


def test_application_insights_is_set_up_with_the_identity_and_no_ingestion_loses_only_telemetry() -> None:
    """In a process of its own (the distro sets the global providers): the Azure Monitor distro,
    signed in with a managed identity, library instrumentations off, every trace kept; nothing
    listens where it sends, and the work's spans and metrics go on without it."""
    key, client_id = "5ec7e75e-0000-4000-8000-00000000c0de", "11111111-2222-3333-4444-555555555555"
    nowhere = "https://127.0.0.1:9/"  # nothing listens there
    script = """
from batching import telemetry
from batching.settings import Settings
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
telemetry.configure(Settings())
assert telemetry.enabled()
assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
assert trace.get_tracer_provider().sampler.get_description() == "ApplicationInsightsSampler1.0"
with telemetry.step("job.requeue", job_id="job-a", delaySeconds=1.0):
    pass
trace.get_tracer_provider().force_flush(1000)
metrics.get_meter_provider().shutdown(timeout_millis=1000)
trace.get_tracer_provider().shutdown()
print("work done")
"""
    environment = {
        **os.environ,
        "TELEMETRY_EXPORTER": "azure",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={key};IngestionEndpoint={nowhere}",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"Authorization=AAD;ClientId={client_id}",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "work done" in result.stdout
    assert key not in result.stdout + result.stderr


def test_queue_age_counts_from_when_a_message_was_due_not_from_when_a_delayed_retry_was_sent(
    recording: _Recording,
) -> None:
    sent = datetime.now(UTC).timestamp() - 60  # put back a minute ago, with a 50 s delay
    unit = _unit("job-a", 1, trace=MessageTrace(traceparent=CARRIED, visible_at=sent + 50))
    started = int((sent + 62) * 1e9)  # taken in 12 s after it became visible
    taken = telemetry.received(
        unit,
        source="work",
        queue="provisioning-work",
        dequeue_count=1,
        inserted_on=datetime.fromtimestamp(sent, UTC),
        started=started,
    )
    (intake,) = recording.named("job.intake")
    assert intake.attributes is not None
    assert intake.attributes["queueAgeSeconds"] == pytest.approx(12, abs=0.01)
    assert intake.parent is not None
    assert f"{intake.parent.span_id:016x}" == CARRIED.split("-")[2]  # continues the carried trace
    assert taken is not None
    assert taken.trace is not None
    assert taken.trace.traceparent == f"00-{intake.context.trace_id:032x}-{intake.context.span_id:016x}-01"
    ((attributes, age),) = recording.points("queue.age")
    assert attributes == {"queue": "work"}
    assert age.count == 1
    assert age.sum == pytest.approx(12, abs=0.01)
