"""Message shapes: the public job contract (v1), Graph's own `$batch` body, and the internal
work message. One pydantic model per shape; everything downstream uses `Job` / `Operation`.
"""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic.alias_generators import to_camel

from batching.allowlist import header_problems, object_url_problems, url_as_sent, url_problem
from batching.connector.callback_urls import callback_url_problems

MAX_OPERATIONS_PER_SUBMISSION: Final = 1000
WRITE_METHODS: Final = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Whole-string match even with `re.match` (`\Z`, not `$`, which also matches before a final
# newline). Pydantic's own (Rust) regex engine has no `\Z`: models check it with `fullmatch`.
JOB_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}\Z"
_JOB_ID: Final = re.compile(JOB_ID_PATTERN)

# Limits on JSON values taken from callers (bodies, and every other field):
# - nesting: a body may nest objects and arrays at most MAX_BODY_DEPTH levels (`{}` is one);
#   Graph's own payloads for the allow-listed calls need fewer than ten. A whole document
#   may nest at most MAX_DOCUMENT_DEPTH (a work message holds a body four levels down), and
#   that is checked before any parser recurses.
# - numbers: integers within Graph's Edm.Int64 range [-2**63, 2**63 - 1]; other numbers are
#   finite doubles. NaN and Infinity are not JSON and are refused, never turned into null.
# - text: no unpaired surrogates (`"\ud800"`): they are not Unicode and cannot be stored.
MAX_BODY_DEPTH: Final = 32
MAX_DOCUMENT_DEPTH: Final = MAX_BODY_DEPTH + 4
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
MAX_CORRELATION_ID_LENGTH: Final = 256

# Table keys may not hold / \ # ? or control characters (Table service rules).
_ROW_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

Method = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
# Who waits for the work: a flow (HTTP), another system (queue), nobody in particular (bulk).
WorkPriority = Literal["high", "normal", "low"]
# Bounds of the counters a work message carries: far above anything the app writes, so a
# message that names more was not written by it.
MAX_COUNTER: Final = 10_000
MAX_WAIT_SECONDS: Final = 30 * 24 * 3600.0
MAX_UNIX_TIME: Final = 4_102_444_800.0  # 2100-01-01
MAX_SEQ: Final = 10_000_000  # a bulk file's line number
MAX_ITEMS_PER_MESSAGE: Final = 1_000
MAX_CLOCK_SKEW_SECONDS: Final = 600.0  # between the instance that wrote a message and the reader


def is_job_id(value: object) -> bool:
    """Whether `value` is a valid job id (`[A-Za-z0-9._-]{1,64}`, the whole string)."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def is_row_key(value: object) -> bool:
    """Whether `value` can be an operation id: a Table RowKey of 1 to 255 characters."""
    return isinstance(value, str) and 0 < len(value) <= 255 and not _ROW_KEY_FORBIDDEN.search(value)


def is_clean_text(value: object, max_length: int) -> bool:
    """Text without control characters or unpaired surrogates, at most `max_length` long."""
    return isinstance(value, str) and len(value) <= max_length and not _TEXT_FORBIDDEN.search(value)


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def json_value_problems(value: Any, max_depth: int = MAX_BODY_DEPTH) -> list[str]:
    """Why a JSON value (a body) is outside the limits above; empty when it is within them.

    Iterative: no input can exhaust the stack. Never echoes the value."""
    problems: dict[str, None] = {}
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth + 1 > max_depth:
                problems[f"is nested more than {max_depth} levels deep"] = None
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        problems["has an object key that is not text"] = None
                    elif _SURROGATE.search(key):
                        problems["has an object key with an unpaired surrogate (not Unicode text)"] = None
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                problems["has an integer outside Graph's 64-bit range"] = None
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems["has a number that is not finite (NaN and Infinity are not JSON)"] = None
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                problems["has text with an unpaired surrogate (not Unicode text)"] = None
        else:
            problems["has a value that is not JSON"] = None
    return list(problems)


def _as_text_id(value: Any) -> Any:
    """Graph callers often send numeric ids; they are strings on the wire."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_row_key(value: str) -> str:
    if _ROW_KEY_FORBIDDEN.search(value):
        raise ValueError("may not contain / \\ # ? or control characters")
    return value


def _check_job_id(value: str) -> str:
    if not is_job_id(value):
        raise ValueError("must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    return value


def _check_correlation_id(value: str) -> str:
    if _TEXT_FORBIDDEN.search(value):
        raise ValueError("may not contain control characters or unpaired surrogates")
    return value


def _as_id_list(value: Any) -> Any:
    """`dependsOn` may arrive as one id instead of a list of ids."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_relative_url(value: str) -> str:
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value if value.startswith("/") else f"/{value}"


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    problems = header_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


def _check_body(value: JsonValue) -> JsonValue:
    problems = json_value_problems(value) or object_url_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


OperationId = Annotated[
    str,
    BeforeValidator(_as_text_id),
    Field(min_length=1, max_length=255),
    AfterValidator(_check_row_key),
]
JobId = Annotated[str, AfterValidator(_check_job_id)]
CorrelationId = Annotated[
    str, Field(max_length=MAX_CORRELATION_ID_LENGTH), AfterValidator(_check_correlation_id)
]
GraphUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_relative_url)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class OperationSpec(_Strict):
    """One Graph request as a caller writes it (job contract or `$batch` item)."""

    id: OperationId
    method: Annotated[Method, BeforeValidator(_upper)]
    url: GraphUrl
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] = Field(default_factory=dict)
    body: Annotated[JsonValue, AfterValidator(_check_body)] = None
    depends_on: Annotated[
        list[OperationId], BeforeValidator(_as_id_list), Field(max_length=MAX_OPERATIONS_PER_SUBMISSION)
    ] = Field(default_factory=list)


def _check_callback_url(value: str, info: ValidationInfo) -> str:
    """A callback URL on the allow-list the HTTP door passes in (batching.connector.callback_urls);
    a door that passes none (the queue) takes no callbacks."""
    allowed = (info.context or {}).get("callback_hosts")
    if allowed is None:
        raise ValueError("is taken only by the HTTP API (POST /api/jobs, or the webhook action)")
    problems = callback_url_problems(value, allowed)
    if problems:
        raise ValueError("; ".join(problems))
    return value


# Where the results are POSTed once the job is done (Power Automate's webhook pattern).
CallbackUrl = Annotated[str, AfterValidator(_check_callback_url)]


class JobSubmission(_Strict):
    """The public message, version 1: accepted on the queue and by `POST /api/jobs`."""

    job_id: JobId | None = None
    correlation_id: CorrelationId | None = None
    callback_url: CallbackUrl | None = None
    operations: Annotated[list[OperationSpec], Field(min_length=1, max_length=MAX_OPERATIONS_PER_SUBMISSION)]


class GraphBatchSubmission(_Strict):
    """A Graph `$batch` body taken unchanged, as flows and scripts already build it."""

    job_id: JobId | None = None
    correlation_id: CorrelationId | None = None
    callback_url: CallbackUrl | None = None
    requests: Annotated[list[OperationSpec], Field(min_length=1, max_length=MAX_OPERATIONS_PER_SUBMISSION)]


class Operation(BaseModel):
    """A validated, normalised operation: writes carry a JSON body and Content-Type."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    id: str
    method: Method
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None
    depends_on: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: OperationSpec) -> Operation:
        """Normalise; an output reference (`{{op.path}}`) makes `op` a dependency.

        The URL is kept as it will be sent (`url_as_sent`): query options encoded, so what
        the processor sends is already safe and two spellings of one job hash the same."""
        from batching.references import referenced_ids

        headers = dict(spec.headers)  # names as given: Graph matches them case-insensitively
        body = spec.body
        if spec.method in WRITE_METHODS:
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
            if body is None:
                body = {}
        return cls(
            id=spec.id,
            method=spec.method,
            url=url_as_sent(spec.url),
            headers=headers,
            body=body,
            depends_on=tuple(
                dict.fromkeys([*spec.depends_on, *referenced_ids(spec.url, spec.headers, spec.body)])
            ),
        )


class Job(BaseModel):
    """A whole validated job, ready to be recorded and planned."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    job_id: str
    correlation_id: str | None = None
    operations: tuple[Operation, ...]
    body_hash: str
    callback_url: str | None = None  # not part of `body_hash`: a repeat may subscribe anew

    def work_items(self) -> list[WorkItem]:
        creates = {op.id for op in self.operations if op.method in {"POST", "PUT"}}
        return [
            WorkItem(operation=op, follows_create=any(dep in creates for dep in op.depends_on), seq=index)
            for index, op in enumerate(self.operations)
        ]


class WorkItem(BaseModel):
    """An operation still to be sent, with how many times it has been sent already.

    `follows_create`: it depends on a create in the same job, so a "not found" answer may
    only mean Graph has not replicated the new object yet; `replication_waited` is how long
    it has waited for that so far. `throttled`: how many of its sends Graph answered 429
    (they do not count against the attempt budget); `throttled_since`: when the first was, as
    Unix time, so the wait for Graph is bounded by time instead.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    operation: Operation
    attempts: int = Field(default=0, ge=0, le=MAX_COUNTER)
    follows_create: bool = False
    replication_waited: float = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)
    throttled: int = Field(default=0, ge=0, le=MAX_COUNTER)
    throttled_since: float | None = Field(default=None, ge=0, le=MAX_UNIX_TIME, allow_inf_nan=False)
    seq: int | None = Field(default=None, ge=0, le=MAX_SEQ)  # its place in the job, for result order
    maybe_done: bool = False  # an earlier send got no clear answer: Graph may have carried it out
    # Graph accepted it (202) and is still carrying it out: this operation URL is read instead
    # of sending it again (batching.graph.async_operations), for `operation_waited` s so far.
    operation_url: GraphUrl | None = None
    operation_waited: float = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)

    @field_validator("throttled")
    @classmethod
    def _throttled_sends_are_sends(cls, value: int, info: ValidationInfo) -> int:
        if value > info.data.get("attempts", 0):
            raise ValueError("cannot exceed attempts (every 429 answered one of them)")
        return value

    @field_validator("throttled_since")
    @classmethod
    def _throttled_in_the_past(cls, value: float | None) -> float | None:
        if value is not None and value > time.time() + MAX_CLOCK_SKEW_SECONDS:
            raise ValueError("cannot be in the future")
        return value


_TRACEPARENT: Final = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
MAX_QUEUE_DELAY_SECONDS: Final = 7 * 24 * 3600.0  # the queue service's longest visibility delay


def _check_traceparent(value: str | None) -> str | None:
    if value is not None and not _TRACEPARENT.fullmatch(value):
        raise ValueError("must be a W3C traceparent (version 00)")
    return value


def _check_visible_at(value: float | None) -> float | None:
    if value is not None and value > time.time() + MAX_QUEUE_DELAY_SECONDS + MAX_CLOCK_SKEW_SECONDS:
        raise ValueError("cannot be further ahead than the queue's longest delay")
    return value


class MessageTrace(BaseModel):
    """Where a work message sits in its job's trace (its W3C `traceparent`), and when it was due
    on the queue (`visibleAt`, Unix time), so the next delivery continues the job's trace and
    its queue age leaves out a retry's deliberate delay (batching.telemetry)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel, extra="forbid")

    traceparent: Annotated[str | None, Field(max_length=55), AfterValidator(_check_traceparent)] = None
    visible_at: Annotated[
        float | None, Field(ge=0, le=MAX_UNIX_TIME, allow_inf_nan=False), AfterValidator(_check_visible_at)
    ] = None


def _telemetry_only(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Telemetry never fails the work: a trace that is not valid is dropped, never trusted."""
    try:
        return handler(value)
    except ValidationError:
        return None


class WorkMessage(BaseModel):
    """What the app itself puts on the queue: a recorded job's work, or a retry of part of it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    kind: Literal["provisioning.work"] = "provisioning.work"
    job_id: str
    correlation_id: str | None = None
    priority: WorkPriority = "normal"
    # Who is answerable for these operations: claims before sending name it (see ResultStore.claim).
    ticket: Annotated[str, Field(pattern=r"^(q-)?[0-9A-Za-z-]{1,64}$")]
    items: Annotated[tuple[WorkItem, ...], Field(min_length=1, max_length=MAX_ITEMS_PER_MESSAGE)]
    trace: Annotated[MessageTrace | None, WrapValidator(_telemetry_only)] = None
