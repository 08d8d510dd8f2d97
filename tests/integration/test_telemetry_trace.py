"""One job's telemetry on the local stack: the dev host with the console exporter, Azurite and
the Graph emulator over loopback. The job is posted over HTTP, one of its operations is
throttled long enough to go back on the queue, and the spans the host prints are read back:
one trace from the submission to the last `$batch`, every span naming the job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from devhost.stack import ServedEmulator, start_devhost
from tests.integration.helpers import patch_users, poll_job, wait_until

JOB = "traced-job"
SECRET = "S3cr3t-telemetry"  # planted in a body, a header value and the correlation id


def _submission() -> str:
    operations = patch_users(25)
    operations[2]["body"] = {"jobTitle": f"{SECRET}-body"}
    operations[3]["headers"] = {"client-request-id": f"{SECRET}-header"}
    return json.dumps({"jobId": JOB, "correlationId": f"{SECRET}-cid", "operations": operations})


def _printed(log: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spans and metric points the console exporter printed (one JSON object a line)."""
    spans, metrics = [], []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "span" in document:
            spans.append(document)
        elif "metric" in document:
            metrics.append(document)
    return spans, metrics


def _of_job(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["span"] == name and span["attributes"].get("jobId") == JOB]


def _points(metrics: list[dict[str, Any]], name: str, **attributes: Any) -> list[dict[str, Any]]:
    """The metric's points with these attributes; counters and histograms print what changed."""
    return [m for m in metrics if m["metric"] == name and attributes.items() <= m["attributes"].items()]


def test_a_jobs_spans_from_submission_to_its_last_batch_form_one_trace_printed_with_its_metrics(
    app_env: dict[str, str], graph: ServedEmulator, tmp_path: Path
) -> None:
    env = {
        **app_env,
        "TELEMETRY_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # spans printed within 0.1 s, metrics every 0.5 s
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "THROTTLE_LOCAL_WAIT_SECONDS": "0",  # a 429 sends its operation back to the queue
    }
    graph.emulator.tenant.seed_users(25)
    graph.emulator.configure(
        {
            "itemFaults": [
                {"urlContains": "user7@", "method": "PATCH", "status": 429, "times": 1, "retryAfter": "1"}
            ]
        }
    )
    host = start_devhost(env, tmp_path / "devhost.log")
    try:
        with httpx.Client(timeout=30) as client:
            accepted = client.post(f"{host.base_url}/api/jobs?code={host.key}", content=_submission())
            assert accepted.status_code == 202, accepted.text
            final = poll_job(client, accepted.headers["Location"], timeout=60)[-1]
        assert final.status_code == 200
        assert final.json()["status"] == "Succeeded"

        def printed_all() -> bool:
            spans, metrics = _printed(host.log())
            done = sum(m["value"] for m in _points(metrics, "provisioning.operations", status="Succeeded"))
            return len(_of_job(spans, "graph.batch")) >= 3 and done == 25

        wait_until(printed_all, timeout=30)
        spans, metrics = _printed(host.log())
    finally:
        host.stop()

    mine = [span for span in spans if span["attributes"].get("jobId") == JOB]
    assert {span["traceId"] for span in mine} == {mine[0]["traceId"]}  # one job, one trace
    by_id = {span["spanId"]: span for span in mine}

    (submit,) = _of_job(spans, "job.submit")
    assert submit["attributes"] == {"jobId": JOB, "operationCount": 25, "outcome": "accepted"}
    intakes = sorted(_of_job(spans, "job.intake"), key=lambda span: span["start"])
    runs = sorted(_of_job(spans, "job.run"), key=lambda span: span["start"])
    (requeue,) = _of_job(spans, "job.requeue")
    assert len(intakes) == len(runs) == 2
    # submission -> first delivery -> its run -> the retry it put back -> the second delivery
    assert intakes[0]["parentId"] == submit["spanId"]
    assert runs[0]["parentId"] == intakes[0]["spanId"]
    assert requeue["parentId"] == runs[0]["spanId"]
    assert intakes[1]["parentId"] == requeue["spanId"]
    assert runs[1]["parentId"] == intakes[1]["spanId"]
    assert requeue["attributes"]["operationCount"] == 1
    assert requeue["attributes"]["delaySeconds"] >= 1
    assert all(intake["attributes"]["queueAgeSeconds"] >= 0 for intake in intakes)
    assert intakes[0]["attributes"]["operationCount"] == 25
    assert intakes[1]["attributes"]["operationCount"] == 1

    batches = _of_job(spans, "graph.batch")
    assert len(batches) == 3
    assert all(by_id[call["parentId"]]["span"] == "job.run" for call in batches)
    assert sum(call["attributes"]["operationCount"] for call in batches) == 26  # 25, and the retry
    assert sum(call["attributes"]["statusOk"] for call in batches) == 25
    throttled = [call for call in batches if call["attributes"]["status429"]]
    assert len(throttled) == 1
    assert throttled[0]["attributes"]["retryAfterSeconds"] == 1
    for call in batches:
        attributes = call["attributes"]
        assert call["kind"] == "CLIENT"
        assert attributes["httpStatus"] == 200
        assert len(attributes["clientRequestId"]) == 36
        assert len(attributes["graphRequestId"]) == 36
        assert attributes["paceWaitMs"] >= 0
    waits = _of_job(spans, "pace.wait")
    assert len(waits) == 3
    assert {wait["parentId"] for wait in waits} <= {run["spanId"] for run in runs}
    records = _of_job(spans, "job.record")
    assert sum(record["attributes"].get("rowsSucceeded", 0) for record in records) == 25
    assert sum(record["attributes"].get("rowsRequeued", 0) for record in records) == 1
    printed = json.dumps(spans + metrics)
    assert "Title 7" not in printed  # bodies never reach a span or a metric
    assert SECRET not in printed

    assert sum(m["value"] for m in _points(metrics, "graph.throttled", scope="item")) == 1
    assert sum(m["count"] for m in _points(metrics, "queue.age", queue="work")) == 2  # both deliveries
    assert sum(m["value"] for m in _points(metrics, "graph.batch.calls", httpStatus="200")) == 3
    assert _points(metrics, "pacing.budget.in_use", lane="Writes")
    assert _points(metrics, "coalescer.backlog")
