"""Intake: raw bytes from any door -> a validated `Job`, or a `Rejection` naming every problem.

Queue producers send plain JSON or base64 JSON; HTTP callers send JSON. Both the job contract
(`operations`) and a Graph `$batch` body (`requests`) are accepted.

Every entry point is total: `parse_job` returns a `Job` or a `Rejection` for any input,
`decode_queue_text` returns bytes for any text, and `read_work_message` returns a work
message, None (not a work message: read it as a submission), or raises
`MalformedWorkMessage`. Limits (see `batching.models`): a document nests at most
`MAX_DOCUMENT_DEPTH` levels, checked by a scan before the JSON parser recurses, and a body
`MAX_BODY_DEPTH`; integers within Graph's Int64 range; no NaN or Infinity; no unpaired
surrogates. Problems name the field (`operations[3].body`) and never echo a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Final

from pydantic import ValidationError

from batching.allowlist import find_allowed, path_of, path_shape
from batching.connector.callback_urls import AllowedHosts
from batching.errors import Problem, problems_from_validation
from batching.models import (
    MAX_BODY_DEPTH,
    MAX_CORRELATION_ID_LENGTH,
    MAX_DOCUMENT_DEPTH,
    MAX_INT,
    MAX_OPERATIONS_PER_SUBMISSION,
    MIN_INT,
    GraphBatchSubmission,
    Job,
    JobSubmission,
    Operation,
    OperationSpec,
    WorkItem,
    WorkMessage,
    has_surrogate,
    is_clean_text,
    is_job_id,
    is_row_key,
)
from batching.references import referenced_ids

# At most this many problems are reported for one input (then a count of the rest).
MAX_PROBLEMS: Final = 100


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that cannot run, with what could still be read of it for the record."""

    problems: list[Problem]
    job_id: str | None = None
    correlation_id: str | None = None
    operation_ids: list[str] = field(default_factory=list)


class MalformedWorkMessage(ValueError):
    """A message that says it is the app's own work message (`kind: provisioning.work`) but is
    not a valid one. Its text names the fields only, never their values."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


def decode_queue_text(text: str) -> bytes:
    """Queue message text as JSON bytes: plain JSON as is, otherwise base64-decoded.

    Never raises: text that is neither comes back as its own bytes (unpaired surrogates kept
    as bytes that are not UTF-8, so `parse_job` rejects them as such)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return stripped.encode("utf-8", "surrogatepass")


def read_work_message(data: bytes) -> WorkMessage | None:
    """The app's own work message, or None when the bytes are a submission (or junk).

    Raises `MalformedWorkMessage` (a ValueError) for a document marked as a work message that
    is not a valid one; the service records it Rejected. Whether each operation may be sent
    is decided when it is sent (`batching.allowlist.sendable_problems`), so one bad operation
    fails alone instead of taking the rest of its message with it.
    """
    document, problems = load_document(data)
    if not (isinstance(document, dict) and document.get("kind") == "provisioning.work"):
        return None
    if problems:
        raise MalformedWorkMessage(problems)
    try:
        work = WorkMessage.model_validate(document)
    except ValidationError as error:
        raise MalformedWorkMessage(_capped(problems_from_validation(error))) from None
    problems = _work_message_problems(work)
    if problems:
        raise MalformedWorkMessage(problems)
    return work


def _work_message_problems(work: WorkMessage) -> list[Problem]:
    """What the work message model does not check itself: ids that must be Table keys."""
    problems = []
    if not is_job_id(work.job_id):
        problems.append(Problem("jobId", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -"))
    if work.correlation_id is not None and has_surrogate(work.correlation_id):
        problems.append(Problem("correlationId", "has text with an unpaired surrogate (not Unicode text)"))
    for index, item in enumerate(work.items):
        if not is_row_key(item.operation.id):
            problems.append(
                Problem(f"items[{index}].operation.id", "may not contain / \\ # ? or control characters")
            )
    return _capped(problems)


def parse_job(
    raw: bytes | str, *, callback_hosts: AllowedHosts | None = None, callback_required: bool = False
) -> Job | Rejection:
    """Validate a submission completely; never raises for bad input.

    `callback_hosts`: where a `callbackUrl` may point (the HTTP door); without it a job with
    one is refused. `callback_required`: a job without one is refused (the webhook action)."""
    document, problems = load_document(raw)
    if not isinstance(document, dict):
        if problems:
            return Rejection(problems)
        return Rejection([Problem("body", "must be a JSON object with 'operations' or 'requests'")])
    missing = []
    if callback_required and document.get("callbackUrl") is None:
        missing = [Problem("callbackUrl", "is required: the URL the results are POSTed to")]

    model: type[JobSubmission] | type[GraphBatchSubmission]
    if "requests" in document and "operations" not in document:
        model, container = GraphBatchSubmission, "requests"
    else:
        model, container = JobSubmission, "operations"
    if problems:
        return _salvage(document, container, [*problems, *missing])
    try:
        submission = model.model_validate(document, context={"callback_hosts": callback_hosts})
    except ValidationError as error:
        return _salvage(document, container, [*problems_from_validation(error), *missing])

    specs = submission.operations if isinstance(submission, JobSubmission) else submission.requests
    problems = [*check_operation_graph(specs, container), *missing]
    if problems:
        return _salvage(document, container, problems)

    operations = tuple(Operation.from_spec(spec) for spec in specs)
    return Job(
        job_id=submission.job_id or str(uuid.uuid4()),
        correlation_id=submission.correlation_id,
        operations=operations,
        body_hash=job_body_hash(submission.correlation_id, operations),
        callback_url=submission.callback_url,
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
    """Checks across operations: unique ids, known dependencies, no cycles, allow-listed calls.

    Operations are named by position (`operations[2]`), never by their ids' text."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        key = spec.id.lower()
        if key in seen:
            problems.append(
                Problem(f"{container}[{index}].id", f"duplicate id (also at {container}[{seen[key]}])")
            )
        else:
            seen[key] = index
        path = path_of(spec.url)
        if find_allowed(spec.method, path) is None:
            problems.append(
                Problem(
                    f"{container}[{index}].url",
                    f"{spec.method} {path_shape(path)} is not an allowed operation",
                )
            )

    ids = {spec.id for spec in specs}
    for index, spec in enumerate(specs):
        for dep_index, dep in enumerate(spec.depends_on):
            where = f"{container}[{index}].dependsOn[{dep_index}]"
            if dep == spec.id:
                problems.append(Problem(where, "an operation cannot depend on itself"))
            elif dep not in ids:
                problems.append(Problem(where, "names no operation of this job"))
        for field_name, value in (("url", spec.url), ("headers", spec.headers), ("body", spec.body)):
            for ref in referenced_ids(*_as_parts(field_name, value)):
                where = f"{container}[{index}].{field_name}"
                if ref == spec.id:
                    problems.append(Problem(where, "an output reference refers to the operation itself"))
                elif ref not in ids:
                    problems.append(Problem(where, "an output reference names no operation of this job"))
        if len(problems) > MAX_PROBLEMS:
            break

    if not problems:
        problems.extend(_cycle_problems(specs, container))
    return _capped(problems)


def _as_parts(field_name: str, value: Any) -> tuple[str, dict[str, str], Any]:
    """One field laid out as (url, headers, body) for `referenced_ids`."""
    if field_name == "url":
        return value, {}, None
    if field_name == "headers":
        return "", value, None
    return "", {}, value


_MAX_CYCLES: Final = 10


def _cycle_problems(specs: list[OperationSpec], container: str) -> list[Problem]:
    """Dependency cycles, found by an iterative depth-first search (a chain of any length,
    e.g. 1,000 operations each depending on the one before, uses no call stack)."""
    index_of = {spec.id: i for i, spec in enumerate(specs)}
    deps = {
        spec.id: list(dict.fromkeys([*spec.depends_on, *referenced_ids(spec.url, spec.headers, spec.body)]))
        for spec in specs
    }
    done: set[str] = set()
    problems: list[Problem] = []
    for start in deps:
        if start in done:
            continue
        path = [start]
        on_path = {start: 0}
        pending = [iter(deps[start])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                node = path.pop()
                del on_path[node]
                done.add(node)
                pending.pop()
            elif dep in on_path:
                cycle = [*path[on_path[dep] :], dep]
                problems.append(
                    Problem(
                        f"{container}[{index_of[dep]}].dependsOn",
                        "dependency cycle: "
                        + _describe_cycle([f"{container}[{index_of[n]}]" for n in cycle]),
                    )
                )
                if len(problems) >= _MAX_CYCLES:
                    return problems
            elif dep not in done and dep in deps:
                on_path[dep] = len(path)
                path.append(dep)
                pending.append(iter(deps[dep]))
    return problems


def _describe_cycle(names: list[str]) -> str:
    if len(names) > 8:
        return " -> ".join([*names[:4], "...", *names[-3:]]) + f" ({len(names) - 1} operations)"
    return " -> ".join(names)


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], Problem("body", f"... and {rest} more problems")]


# --- reading JSON safely ---------------------------------------------------------------------


class _NotJson:
    """Stands in, while a document is checked, for a number Graph cannot take."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_NOT_FINITE: Final = "has a number that is not finite (NaN and Infinity are not JSON)"
_OUT_OF_RANGE: Final = "has an integer outside Graph's 64-bit range"
_UNPAIRED: Final = "has text with an unpaired surrogate (not Unicode text)"


class _Numbers:
    """json.loads hooks: out-of-range numbers become `_NotJson` markers, found by the scan."""

    def __init__(self) -> None:
        self.marked = False

    def constant(self, name: str) -> _NotJson:  # NaN, Infinity, -Infinity
        self.marked = True
        return _NotJson(_NOT_FINITE)

    def integer(self, text: str) -> int | _NotJson:
        if len(text) <= 20:  # at most 19 digits and a sign: int() is cheap, then the range
            value = int(text)
            if MIN_INT <= value <= MAX_INT:
                return value
        self.marked = True
        return _NotJson(_OUT_OF_RANGE)

    def real(self, text: str) -> float | _NotJson:
        value = float(text)
        if math.isfinite(value):
            return value
        self.marked = True
        return _NotJson(_NOT_FINITE)


# A JSON string token (escapes included), and the tokens that give a document its shape.
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_SHAPE_TOKEN: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]|"', re.DOTALL)
_DELTA: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
# `\ud800`-`\udfff` escapes, or such characters themselves: a surrogate may be in the text.
_SURROGATE_HINT: Final = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
# Where a problem is: fields of the message shapes are followed down to `body` / `headers`.
_FIELD_NAMES: Final = frozenset(
    name
    for model in (JobSubmission, GraphBatchSubmission, OperationSpec, WorkMessage, WorkItem, Operation)
    for field_name, info in model.model_fields.items()
    for name in (field_name, info.alias)
    if name
)
_LEAF_FIELDS: Final = frozenset({"body", "headers"})
_NESTED_TOO_DEEP: Final = f"is nested more than {MAX_BODY_DEPTH} levels deep"


def load_document(raw: bytes | str) -> tuple[Any, list[Problem]]:
    """Any input as (JSON document or None, problems). Never raises.

    Nesting is measured before `json.loads` (which recurses) ever sees the text; numbers
    and text Graph cannot take are found after parsing and named by field."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None, [Problem("body", "is not UTF-8 text")]
    else:
        text = raw.removeprefix("\ufeff")
    if not text.strip():
        return None, [Problem("body", "is empty; expected a JSON job")]
    too_deep = _nesting_problem(text)
    if too_deep is not None:
        return None, [too_deep]
    numbers = _Numbers()
    try:
        document = json.loads(
            text, parse_constant=numbers.constant, parse_int=numbers.integer, parse_float=numbers.real
        )
    except json.JSONDecodeError as error:
        reason = re.split(r"[:'\"]", error.msg, maxsplit=1)[0].strip()
        where = f"at line {error.lineno} column {error.colno}"
        return None, [Problem("body", f"is not valid JSON ({reason} {where})")]
    except (ValueError, RecursionError):
        return None, [Problem("body", "is not valid JSON")]
    if numbers.marked or _SURROGATE_HINT.search(text):
        problems = _value_problems(document)
        if problems:
            return document, problems
    return document, []


def _nesting_problem(text: str) -> Problem | None:
    """A problem when the document nests deeper than MAX_DOCUMENT_DEPTH, naming where."""
    skeleton = _STRING.sub("", text) if '"' in text else text
    brackets = _NOT_BRACKET.sub("", skeleton)
    if len(brackets) <= MAX_DOCUMENT_DEPTH:
        return None
    if max(accumulate(map(_DELTA.__getitem__, brackets))) <= MAX_DOCUMENT_DEPTH:
        return None
    return _locate_deep_nesting(text)


@dataclass(slots=True)
class _Frame:
    opener: str
    label: str
    open: bool  # the label still follows field names down
    index: int = 0
    key: str | None = None
    expect_key: bool = True


def _child_label(parent: _Frame | None, key: str | None, opener: str) -> tuple[str, bool]:
    """The field a value belongs to, e.g. `operations[3].body`, and whether it goes deeper."""
    if parent is None:
        return "", True
    if not parent.open:
        return parent.label, False
    if parent.opener == "[":
        # an item of a list field: its own fields are named next, a nested list is not
        return (f"{parent.label}[{parent.index}]", opener == "{") if parent.label else ("", False)
    if key in _FIELD_NAMES:
        label = f"{parent.label}.{key}" if parent.label else key
        return label, key not in _LEAF_FIELDS
    return parent.label, False


def _locate_deep_nesting(text: str) -> Problem:
    """Walk the tokens (no recursion, no parse) to the first point nested too deeply."""
    frames: list[_Frame] = []
    for match in _SHAPE_TOKEN.finditer(text):
        piece = match.group(0)
        top = frames[-1] if frames else None
        if piece == '"':
            return Problem("body", "is not valid JSON (a string is not terminated)")
        if piece[0] == '"':
            if top is not None and top.opener == "{" and top.expect_key:
                top.key = piece
        elif piece == ":":
            if top is not None:
                top.expect_key = False
        elif piece == ",":
            if top is not None:
                top.index += 1
                top.expect_key, top.key = True, None
        elif piece in "[{":
            key = None
            if top is not None and top.opener == "{" and top.key is not None and top.open:
                try:
                    key = json.loads(top.key)
                except ValueError:
                    key = None
            label, open_ = _child_label(top, key if isinstance(key, str) else None, piece)
            frames.append(_Frame(piece, label, open_))
            if len(frames) > MAX_DOCUMENT_DEPTH:
                return Problem(label or "body", _NESTED_TOO_DEEP)
        elif frames:
            frames.pop()
    return Problem("body", _NESTED_TOO_DEEP)


def _value_problems(document: Any) -> list[Problem]:
    """Numbers Graph cannot take and unpaired surrogates, named by the field they are in."""
    found: dict[tuple[str, str], None] = {}

    def add(label: str, reason: str) -> None:
        if len(found) <= MAX_PROBLEMS:
            found[(label or "body", reason)] = None

    queue: deque[tuple[Any, str, bool]] = deque([(document, "", True)])
    while queue:
        value, label, open_ = queue.popleft()
        if isinstance(value, _NotJson):
            add(label, value.reason)
        elif isinstance(value, str):
            if has_surrogate(value):
                add(label, _UNPAIRED)
        elif isinstance(value, dict):
            for key, item in value.items():
                if has_surrogate(key):
                    add(label, "has a field name with an unpaired surrogate (not Unicode text)")
                if open_ and key in _FIELD_NAMES:
                    child = f"{label}.{key}" if label else key
                    queue.append((item, child, key not in _LEAF_FIELDS))
                else:
                    queue.append((item, label, False))
        elif isinstance(value, list):
            deeper = open_ and bool(label)
            for index, item in enumerate(value):
                queue.append(
                    (item, f"{label}[{index}]" if deeper else label, deeper and isinstance(item, dict))
                )
    return _capped([Problem(label, reason) for label, reason in found])


def _salvage(document: dict[str, Any], container: str, problems: list[Problem]) -> Rejection:
    """What a rejected document still tells: its job id and the operation ids it names (only
    those that can be recorded as they are)."""
    job_id = document.get("jobId")
    correlation_id = document.get("correlationId")
    ids: dict[str, None] = {}
    items = document.get(container)
    if isinstance(items, list):
        for item in items[:MAX_OPERATIONS_PER_SUBMISSION]:
            raw_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(raw_id, int) and not isinstance(raw_id, bool):
                raw_id = str(raw_id)
            if isinstance(raw_id, str) and is_row_key(raw_id):
                ids[raw_id] = None
    return Rejection(
        problems=_capped(problems),
        job_id=job_id if is_job_id(job_id) else None,
        correlation_id=correlation_id if is_clean_text(correlation_id, MAX_CORRELATION_ID_LENGTH) else None,
        operation_ids=list(ids),
    )
