"""Message shapes: the public job contract (v1), Graph's own `$batch` body, and the internal
work message. One pydantic model per shape; everything downstream uses `Job` / `Operation`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
)
from pydantic.alias_generators import to_camel

MAX_OPERATIONS_PER_SUBMISSION: Final = 1000
WRITE_METHODS: Final = frozenset({"POST", "PATCH", "PUT", "DELETE"})
JOB_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"

# Table keys may not hold / \ # ? or control characters (Table service rules).
_ROW_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
# Headers the app owns: a message may not set credentials or transport framing.
_RESERVED_HEADERS: Final = frozenset(
    {"authorization", "host", "content-length", "transfer-encoding", "connection", "cookie"}
)
_ABSOLUTE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_VERSION_PREFIX = re.compile(r"^/?(v1\.0|beta)(/|$)", re.IGNORECASE)

Method = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
# Who waits for the work: a flow (HTTP), another system (queue), nobody in particular (bulk).
WorkPriority = Literal["high", "normal", "low"]


def _as_text_id(value: Any) -> Any:
    """Graph callers often send numeric ids; they are strings on the wire."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_row_key(value: str) -> str:
    if _ROW_KEY_FORBIDDEN.search(value):
        raise ValueError("may not contain / \\ # ? or control characters")
    return value


def _as_id_list(value: Any) -> Any:
    """`dependsOn` may arrive as one id instead of a list of ids."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_relative_url(value: str) -> str:
    if value.startswith("//") or _ABSOLUTE_URL.match(value):
        raise ValueError("must be relative to the Graph version root, e.g. /users/{id}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value) or "\\" in value:
        raise ValueError("may not contain spaces, control characters or backslashes")
    if _VERSION_PREFIX.match(value):
        raise ValueError("leave out the Graph version: /users, not /v1.0/users")
    path = value.split("?", 1)[0]
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise ValueError("may not contain . or .. segments")
    return value if value.startswith("/") else f"/{value}"


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the app and may not be given")
    return value


OperationId = Annotated[
    str,
    BeforeValidator(_as_text_id),
    Field(min_length=1, max_length=255),
    AfterValidator(_check_row_key),
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
    body: JsonValue = None
    depends_on: Annotated[list[OperationId], BeforeValidator(_as_id_list)] = Field(default_factory=list)


class JobSubmission(_Strict):
    """The public message, version 1: accepted on the queue and by `POST /api/jobs`."""

    job_id: Annotated[str | None, Field(pattern=JOB_ID_PATTERN)] = None
    correlation_id: Annotated[str | None, Field(max_length=256)] = None
    operations: Annotated[list[OperationSpec], Field(min_length=1, max_length=MAX_OPERATIONS_PER_SUBMISSION)]


class GraphBatchSubmission(_Strict):
    """A Graph `$batch` body taken unchanged, as flows and scripts already build it."""

    job_id: Annotated[str | None, Field(pattern=JOB_ID_PATTERN)] = None
    correlation_id: Annotated[str | None, Field(max_length=256)] = None
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
        """Normalise; an output reference (`{{op.path}}`) makes `op` a dependency."""
        from batching.references import referenced_ids

        headers = dict(spec.headers)
        body = spec.body
        if spec.method in WRITE_METHODS:
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
            if body is None:
                body = {}
        return cls(
            id=spec.id,
            method=spec.method,
            url=spec.url,
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

    def work_items(self) -> list[WorkItem]:
        creates = {op.id for op in self.operations if op.method in {"POST", "PUT"}}
        return [
            WorkItem(operation=op, follows_create=any(dep in creates for dep in op.depends_on))
            for op in self.operations
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
    attempts: int = 0
    follows_create: bool = False
    replication_waited: float = 0.0
    throttled: int = 0
    throttled_since: float | None = None


class WorkMessage(BaseModel):
    """What the app itself puts on the queue: a recorded job's work, or a retry of part of it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    kind: Literal["provisioning.work"] = "provisioning.work"
    job_id: str
    correlation_id: str | None = None
    priority: WorkPriority = "normal"
    items: tuple[WorkItem, ...]
