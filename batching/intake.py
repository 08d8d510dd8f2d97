"""Intake: raw bytes from any door -> a validated `Job`, or a `Rejection` naming every problem.

Queue producers send plain JSON or base64 JSON; HTTP callers send JSON. Both the job contract
(`operations`) and a Graph `$batch` body (`requests`) are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from batching.allowlist import find_allowed
from batching.errors import Problem, problems_from_validation
from batching.models import (
    JOB_ID_PATTERN,
    GraphBatchSubmission,
    Job,
    JobSubmission,
    Operation,
    OperationSpec,
    WorkMessage,
)
from batching.references import referenced_ids


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that cannot run, with what could still be read of it for the record."""

    problems: list[Problem]
    job_id: str | None = None
    correlation_id: str | None = None
    operation_ids: list[str] = field(default_factory=list)


def decode_queue_text(text: str) -> bytes:
    """Queue message text as JSON bytes: plain JSON as is, otherwise base64-decoded."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped.encode("utf-8")
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return stripped.encode("utf-8")


def read_work_message(data: bytes) -> WorkMessage | None:
    """The app's own work message, or None when the bytes are a submission (or junk)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(document, dict) and document.get("kind") == "provisioning.work":
        return WorkMessage.model_validate(document)
    return None


def parse_job(raw: bytes | str) -> Job | Rejection:
    """Validate a submission completely; never raises for bad input."""
    document, problem = _load_json(raw)
    if problem is not None:
        return Rejection([problem])
    if not isinstance(document, dict):
        return Rejection([Problem("body", "must be a JSON object with 'operations' or 'requests'")])

    model: type[JobSubmission] | type[GraphBatchSubmission]
    if "requests" in document and "operations" not in document:
        model, container = GraphBatchSubmission, "requests"
    else:
        model, container = JobSubmission, "operations"
    try:
        submission = model.model_validate(document)
    except ValidationError as error:
        return _salvage(document, container, problems_from_validation(error))

    specs = submission.operations if isinstance(submission, JobSubmission) else submission.requests
    problems = check_operation_graph(specs, container)
    if problems:
        return _salvage(document, container, problems)

    operations = tuple(Operation.from_spec(spec) for spec in specs)
    return Job(
        job_id=submission.job_id or str(uuid.uuid4()),
        correlation_id=submission.correlation_id,
        operations=operations,
        body_hash=job_body_hash(submission.correlation_id, operations),
    )


def job_body_hash(correlation_id: str | None, operations: tuple[Operation, ...]) -> str:
    """Identity of a job's content, the same for equivalent spellings of one body."""
    canonical = json.dumps(
        {
            "correlationId": correlation_id,
            "operations": [op.model_dump(by_alias=True, mode="json") for op in operations],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_operation_graph(specs: list[OperationSpec], container: str) -> list[Problem]:
    """Checks across operations: unique ids, known dependencies, no cycles, allow-listed calls."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        key = spec.id.lower()
        if key in seen:
            problems.append(
                Problem(f"{container}[{index}].id", f"duplicate id {spec.id!r} (also at [{seen[key]}])")
            )
        else:
            seen[key] = index
        path = spec.url.split("?", 1)[0]
        if find_allowed(spec.method, path) is None:
            problems.append(
                Problem(f"{container}[{index}].url", f"{spec.method} {path} is not an allowed operation")
            )

    ids = {spec.id for spec in specs}
    for index, spec in enumerate(specs):
        for dep_index, dep in enumerate(spec.depends_on):
            where = f"{container}[{index}].dependsOn[{dep_index}]"
            if dep == spec.id:
                problems.append(Problem(where, "an operation cannot depend on itself"))
            elif dep not in ids:
                problems.append(Problem(where, f"unknown operation id {dep!r}"))
        for field_name, value in (("url", spec.url), ("headers", spec.headers), ("body", spec.body)):
            for ref in referenced_ids(*_as_parts(field_name, value)):
                where = f"{container}[{index}].{field_name}"
                if ref == spec.id:
                    problems.append(Problem(where, f"{{{{{ref}...}}}} refers to the operation itself"))
                elif ref not in ids:
                    message = f"{{{{{ref}...}}}} refers to unknown operation id {ref!r}"
                    problems.append(Problem(where, message))

    if not problems:
        problems.extend(_cycle_problems(specs, container))
    return problems


def _as_parts(field_name: str, value: Any) -> tuple[str, dict[str, str], Any]:
    """One field laid out as (url, headers, body) for `referenced_ids`."""
    if field_name == "url":
        return value, {}, None
    if field_name == "headers":
        return "", value, None
    return "", {}, value


def _cycle_problems(specs: list[OperationSpec], container: str) -> list[Problem]:
    index_of = {spec.id: i for i, spec in enumerate(specs)}
    deps = {spec.id: [*spec.depends_on, *referenced_ids(spec.url, spec.headers, spec.body)] for spec in specs}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    problems: list[Problem] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                problems.append(
                    Problem(
                        f"{container}[{index_of[dep]}].dependsOn",
                        "dependency cycle: " + " -> ".join(cycle),
                    )
                )
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[node] = 2

    for spec in specs:
        if spec.id not in state:
            visit(spec.id, [])
    return problems


def _load_json(raw: bytes | str) -> tuple[Any, Problem | None]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None, Problem("body", "is not UTF-8 text")
    if not raw.strip():
        return None, Problem("body", "is empty; expected a JSON job")
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as error:
        return None, Problem(
            "body", f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        )


_ROW_KEY_OK = re.compile(r"^[^/\\#?\x00-\x1f\x7f-\x9f]{1,255}$")


def _salvage(document: dict[str, Any], container: str, problems: list[Problem]) -> Rejection:
    """What a rejected document still tells: its job id and the operation ids it names."""
    job_id = document.get("jobId")
    correlation_id = document.get("correlationId")
    ids: list[str] = []
    items = document.get(container)
    if isinstance(items, list):
        for item in items:
            raw_id = item.get("id") if isinstance(item, dict) else None
            text = str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
            if text and _ROW_KEY_OK.match(text) and text not in ids:
                ids.append(text)
    return Rejection(
        problems=problems,
        job_id=job_id if isinstance(job_id, str) and re.match(JOB_ID_PATTERN, job_id) else None,
        correlation_id=correlation_id if isinstance(correlation_id, str) else None,
        operation_ids=ids,
    )
