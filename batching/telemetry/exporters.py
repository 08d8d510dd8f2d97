"""Where telemetry goes: Application Insights in Azure (`azure-monitor-opentelemetry`, signed in
with the app's managed identity), or one JSON line per span and per metric on stdout locally.

Both export from background threads in batches, so the work never waits for them, and an
exporter that fails (ingestion down, a token refused) only loses telemetry.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from batching.settings import Settings

SERVICE_NAME: Final = "graph-provisioning-processor"
CONSOLE_METRIC_INTERVAL_MS: Final = 10_000  # locally; OTEL_METRIC_EXPORT_INTERVAL overrides
# The distro's automatic instrumentations, all off: the app's own spans name every step with its
# job, while library spans (a storage call from the shared pacer, say) would land in whichever
# job's trace happened to be current.
_LIBRARY_INSTRUMENTATIONS: Final = (
    "azure_sdk",
    "django",
    "fastapi",
    "flask",
    "httpx",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)


def providers(settings: Settings) -> tuple[object, object]:
    """The tracer and meter providers for `settings.telemetry_exporter`."""
    if settings.telemetry_exporter == "azure":
        return _azure_monitor(settings)
    return console_providers(sys.stdout)


def resource() -> Resource:
    """The service's name (the cloud role name in Application Insights): OTEL_SERVICE_NAME, else
    the function app's site name, else the product's name."""
    if os.environ.get("OTEL_SERVICE_NAME"):
        return Resource.create({})
    return Resource.create({"service.name": os.environ.get("WEBSITE_SITE_NAME") or SERVICE_NAME})


def console_providers(out: TextIO) -> tuple[TracerProvider, MeterProvider]:
    """Spans and metrics as JSON lines on `out` (spans within seconds, metrics every 10 s)."""
    tracer_provider = TracerProvider(resource=resource())
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=out, formatter=span_line)))
    interval = None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else CONSOLE_METRIC_INTERVAL_MS
    # As Application Insights receives them: counters and histograms as the change since the
    # last line, so a quiet interval prints only the gauges.
    delta: dict[type, AggregationTemporality] = {
        Counter: AggregationTemporality.DELTA,
        Histogram: AggregationTemporality.DELTA,
    }
    exporter = ConsoleMetricExporter(out=out, formatter=metric_lines, preferred_temporality=delta)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource())
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def _azure_monitor(settings: Settings) -> tuple[object, object]:
    """Application Insights through the Azure Monitor distro. The connection string is the
    platform's APPLICATIONINSIGHTS_CONNECTION_STRING, read by the distro itself."""
    from azure.monitor.opentelemetry import configure_azure_monitor

    options: dict[str, Any] = {
        "resource": resource(),
        "instrumentation_options": {name: {"enabled": False} for name in _LIBRARY_INSTRUMENTATIONS},
        # The Functions host already sends the worker's log lines to Application Insights; the
        # distro's log handler goes on a logger nothing writes to, so none is sent twice.
        "logger_name": "batching.telemetry.exported",
    }
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        options["sampling_ratio"] = 1.0  # every job's whole trace; OTEL_TRACES_SAMPLER lowers it
    authentication = os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    credential = entra_credential(authentication, settings.azure_client_id)
    if credential is not None:
        options["credential"] = credential
    configure_azure_monitor(**options)
    return trace.get_tracer_provider(), metrics.get_meter_provider()


def entra_credential(authentication: str | None, client_id: str | None) -> TokenCredential | None:
    """The managed identity that signs telemetry in when `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`
    says `Authorization=AAD` (its `ClientId`, else `AZURE_CLIENT_ID`, else the system identity);
    None when it says nothing (the connection string alone is then enough)."""
    parts = dict(part.split("=", 1) for part in (authentication or "").split(";") if "=" in part)
    fields = {key.strip().lower(): value.strip() for key, value in parts.items()}
    if fields.get("authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    chosen = fields.get("clientid") or client_id or None
    return ManagedIdentityCredential(client_id=chosen) if chosen else ManagedIdentityCredential()


def span_line(span: ReadableSpan) -> str:
    """One span as one JSON line: what it is, where it sits in its trace, how long it took."""
    context = span.get_span_context()
    start, end = span.start_time or 0, span.end_time or 0
    document = {
        "span": span.name,
        "traceId": f"{context.trace_id:032x}" if context else None,
        "spanId": f"{context.span_id:016x}" if context else None,
        "parentId": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "start": datetime.fromtimestamp(start / 1e9, UTC).isoformat(timespec="milliseconds"),
        "durationMs": round((end - start) / 1e6, 1),
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [f"{link.context.span_id:016x}" for link in span.links],
    }
    return json.dumps(document, separators=(",", ":"), default=str) + "\n"


def metric_lines(data: MetricsData) -> str:
    """One JSON line per metric point: its name, attributes, and value (or count/sum/min/max)."""
    lines = []
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    document: dict[str, Any] = {
                        "metric": metric.name,
                        "unit": metric.unit,
                        "attributes": dict(point.attributes or {}),
                    }
                    if isinstance(point, HistogramDataPoint):
                        document.update(count=point.count, sum=point.sum, min=point.min, max=point.max)
                    elif isinstance(point, NumberDataPoint):
                        document["value"] = point.value
                    lines.append(json.dumps(document, separators=(",", ":"), default=str) + "\n")
    return "".join(lines)
