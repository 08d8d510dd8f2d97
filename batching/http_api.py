"""The HTTP door in Power Automate's asynchronous pattern: 202 + Location while a job runs,
200 with per-operation results when every operation is final.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from batching.callers import PRINCIPAL_HEADER, allowed_ids, caller_allowed, read_principal
from batching.connector.actions import ActionName, action_results, build_job
from batching.connector.polling import retry_after_seconds
from batching.connector.subscriptions import SUBSCRIPTION_ID_PATTERN
from batching.errors import PROBLEM_CONTENT_TYPE, Problem, problem_document
from batching.models import JOB_ID_PATTERN
from batching.records import JobSummary
from batching.service import Accepted, Conflict, Invalid, JobView, ProvisioningService

MAX_BODY_BYTES: Final = 4 * 1024 * 1024
log = logging.getLogger(__name__)


async def post_job(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _problem(413, "The job is too large", [Problem("body", f"is over {MAX_BODY_BYTES} bytes")])
    submitted = await service.submit(body, base_url=_base_url(req, service), watched=True)
    return await _answer_submission(req, service, submitted)


async def post_action(
    req: func.HttpRequest, service: ProvisioningService, action: ActionName
) -> func.HttpResponse:
    """A connector action: its typed input becomes a general job, answered as `post_job` does."""
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _problem(413, "The input is too large", [Problem("body", f"is over {MAX_BODY_BYTES} bytes")])
    built = build_job(action, body, service.settings.graph_base_url)
    if isinstance(built, list):
        return _problem(400, "The input is invalid", built)
    return await _answer_submission(
        req, service, await service.submit(json.dumps(built).encode(), action=action, watched=True)
    )


async def _answer_submission(
    req: func.HttpRequest, service: ProvisioningService, result: Accepted | Invalid | Conflict
) -> func.HttpResponse:
    if isinstance(result, Invalid):
        title = "The job is too large" if result.status == 413 else "The job is invalid"
        return _problem(result.status, title, result.problems)
    if isinstance(result, Conflict):
        return _problem(
            409,
            "The jobId is taken",
            [Problem("jobId", "already names a job with a different body")],
        )
    assert isinstance(result, Accepted)
    if not result.created:
        return await get_job_by_id(req, service, result.summary.job_id)
    return _accepted(
        req, service, result.summary.job_id, _progress(result.summary.job_id, result.summary, req, service)
    )


async def subscribe_job(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    """The webhook action: run a job and POST its results to `callbackUrl` once it is done.

    201 with the job's progress and `Location`, the URL that unsubscribes (Power Automate's
    webhook contract); the same job and URL again is the same subscription."""
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _problem(413, "The job is too large", [Problem("body", f"is over {MAX_BODY_BYTES} bytes")])
    result = await service.submit(
        body, base_url=_base_url(req, service), callback_required=True, watched=True
    )
    if not isinstance(result, Accepted):
        return await _answer_submission(req, service, result)
    job_id = result.summary.job_id
    view = await service.job(job_id)
    summary = view.summary if view is not None else result.summary
    return func.HttpResponse(
        json.dumps(_progress(job_id, summary, req, service)),
        status_code=201,
        mimetype="application/json",
        headers={"Location": _with_code(req, f"{_base_url(req, service)}/api/webhooks/jobs/{job_id}")},
    )


async def unsubscribe_job(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    """Stop a job's pending callback (the flow was cancelled or timed out); the job runs on."""
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    job_id = req.route_params.get("jobId", "")
    if not re.match(JOB_ID_PATTERN, job_id):
        return _problem(400, "The job id is invalid", [Problem("jobId", "must match [A-Za-z0-9._-]{1,64}")])
    if not await service.callbacks.cancel(job_id):
        return _problem(404, "No such job", [Problem("jobId", "names no job")])
    # No body; the content type is still one the definition declares (the host adds one anyway).
    return func.HttpResponse(status_code=204, mimetype="application/json")


async def subscribe_trigger(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    """The webhook trigger: every job that finishes from now on is POSTed to `callbackUrl`.

    201 with the subscription (never its URL) and `Location`, the URL that unsubscribes; the
    same callback URL again is the same subscription, with the filters given last."""
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _problem(413, "The input is too large", [Problem("body", f"is over {MAX_BODY_BYTES} bytes")])
    base_url = _base_url(req, service)
    made = await service.subscriptions.subscribe(body, base_url)
    if isinstance(made, list):
        return _problem(400, "The subscription is invalid", made)
    return func.HttpResponse(
        json.dumps(made.describe()),
        status_code=201,
        mimetype="application/json",
        headers={
            "Location": _with_code(req, f"{base_url}/api/webhooks/subscriptions/{made.subscription_id}")
        },
    )


async def unsubscribe_trigger(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    """Remove a trigger subscription (its flow was turned off or deleted): nothing more is sent."""
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    sub_id = req.route_params.get("subscriptionId", "")
    if not re.fullmatch(SUBSCRIPTION_ID_PATTERN, sub_id):
        return _problem(
            400,
            "The subscription id is invalid",
            [Problem("subscriptionId", "must be 32 characters of 0-9 a-f")],
        )
    if not await service.subscriptions.unsubscribe(sub_id):
        return _problem(404, "No such subscription", [Problem("subscriptionId", "names no subscription")])
    return func.HttpResponse(status_code=204, mimetype="application/json")


async def get_job(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse:
    if (refused := _refuse_caller(req, service)) is not None:
        return refused
    job_id = req.route_params.get("jobId", "")
    if not re.match(JOB_ID_PATTERN, job_id):
        return _problem(400, "The job id is invalid", [Problem("jobId", "must match [A-Za-z0-9._-]{1,64}")])
    return await get_job_by_id(req, service, job_id)


async def get_job_by_id(
    req: func.HttpRequest, service: ProvisioningService, job_id: str
) -> func.HttpResponse:
    view = await service.job(job_id)
    if view is None:
        return _problem(404, "No such job", [Problem("jobId", "names no job")])
    if not view.summary.done:
        return _accepted(req, service, job_id, _progress(job_id, view.summary, req, service))
    return _json(200, _results(view, status_url(req, service, job_id)))


def _refuse_caller(req: func.HttpRequest, service: ProvisioningService) -> func.HttpResponse | None:
    """403 when ALLOWED_CALLER_IDS is set and the signed-in caller is not on it (see callers)."""
    allowed = allowed_ids(service.settings.allowed_caller_ids)
    header = req.headers.get(PRINCIPAL_HEADER)
    if caller_allowed(allowed, header):
        return None
    caller = read_principal(header)
    if caller is None:
        log.warning("refused a caller: no App Service authentication principal, ALLOWED_CALLER_IDS is set")
    else:  # ids only (GUIDs), so the operator can tell which one to add
        log.warning(
            "refused a caller not on ALLOWED_CALLER_IDS: application ids %s, object ids %s",
            sorted(caller.app_ids),
            sorted(caller.object_ids),
        )
    return _problem(
        403,
        "The caller is not allowed",
        [Problem("caller", "is not on the list of allowed applications and identities")],
    )


def status_url(req: func.HttpRequest, service: ProvisioningService, job_id: str) -> str:
    """Absolute status URL; keeps a `code` query key so a poller without headers gets through."""
    return _with_code(req, f"{_base_url(req, service)}/api/jobs/{job_id}")


def _base_url(req: func.HttpRequest, service: ProvisioningService) -> str:
    parts = urlsplit(req.url)
    return (service.settings.public_base_url or f"{parts.scheme}://{parts.netloc}").rstrip("/")


def _with_code(req: func.HttpRequest, url: str) -> str:
    code = req.params.get("code")
    return f"{url}?{urlencode({'code': code})}" if code else url


def _progress(
    job_id: str, summary: JobSummary, req: func.HttpRequest, service: ProvisioningService
) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "status": summary.status.value,
        "statusUrl": status_url(req, service, job_id),
        "operationCount": summary.total,
        "counts": summary.counts_json(),
    }


def _results(view: JobView, url: str) -> dict[str, Any]:
    summary = view.summary
    document: dict[str, Any] = {
        "jobId": summary.job_id,
        "status": summary.status.value,
        "statusUrl": url,
        "correlationId": summary.correlation_id,
        "operationCount": summary.total,
        "counts": summary.counts_json(),
        "operations": [record.to_json() for record in view.operations],
    }
    if summary.reason:
        document["reason"] = summary.reason
    document.update(action_results(summary.action, view.operations))
    return document


def results_document(view: JobView, url: str) -> dict[str, Any]:
    """The 200 answer's body, which a callback POSTs as well."""
    return _results(view, url)


def _accepted(
    req: func.HttpRequest, service: ProvisioningService, job_id: str, body: dict[str, Any]
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=202,
        mimetype="application/json",
        headers={
            "Location": status_url(req, service, job_id),
            "Retry-After": str(
                retry_after_seconds(
                    body["counts"]["pending"],
                    service.settings.graph_writes_per_second,
                    lower=service.settings.status_retry_after_seconds,
                    upper=service.settings.status_retry_after_max_seconds,
                )
            ),
        },
    )


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _problem(status: int, title: str, problems: list[Problem]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(problem_document(problems, title=title, status=status)),
        status_code=status,
        mimetype=PROBLEM_CONTENT_TYPE,
    )
