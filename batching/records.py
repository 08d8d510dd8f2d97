"""What is recorded per operation and per job, and how it maps to Table entities.

PartitionKey = job id. RowKey = operation id for operation rows; the job summary is the row
with the empty RowKey, which no operation id can take (ids are at least one character).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

SUMMARY_ROW_KEY: Final = ""
# A string property holds at most 64 KiB (32K UTF-16 characters); keep well under it.
MAX_RESPONSE_BODY_CHARS: Final = 30_000
MAX_ERROR_MESSAGE_CHARS: Final = 4_000
MAX_SHORT_TEXT_CHARS: Final = 256
# The error code of operations whose message kept failing and went to the poison queue:
# nothing is known about them, so a replay may run them again.
PROCESSING_FAILED: Final = "processingFailed"


class OperationStatus(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    REJECTED = "Rejected"

    @property
    def is_final(self) -> bool:
        return self is not OperationStatus.PENDING


class JobStatus(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    REJECTED = "Rejected"


@dataclass(frozen=True, slots=True)
class OperationOutcome:
    """One operation's state after an attempt (or before any)."""

    op_id: str
    status: OperationStatus
    method: str
    url: str
    attempts: int = 0
    http_status: int | None = None
    response_body: Any = None
    error_code: str | None = None
    error_message: str | None = None
    graph_request_id: str | None = None
    note: str | None = None
    seq: int | None = None

    def to_entity(self, job_id: str, correlation_id: str | None, now: datetime) -> dict[str, Any]:
        body_text, truncated = _encode_body(self.response_body)
        entity: dict[str, Any] = {
            "PartitionKey": job_id,
            "RowKey": self.op_id,
            "Status": self.status.value,
            "Method": self.method or None,
            "Url": self.url or None,
            "Attempts": self.attempts,
            "HttpStatus": self.http_status,
            # Rows are merged: empty strings (not absent properties) clear what an
            # earlier attempt wrote, such as a throttling message.
            "ResponseBody": body_text or "",
            "ResponseBodyTruncated": truncated,
            "ErrorCode": _clip(self.error_code, MAX_SHORT_TEXT_CHARS) or "",
            "ErrorMessage": _clip(self.error_message, MAX_ERROR_MESSAGE_CHARS) or "",
            "GraphRequestId": _clip(self.graph_request_id, MAX_SHORT_TEXT_CHARS) or "",
            "Note": self.note or "",
            "CorrelationId": correlation_id or "",
            "UpdatedAt": now,
        }
        if self.seq is not None:
            entity["Seq"] = self.seq
        return {key: value for key, value in entity.items() if value is not None}


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """An operation row as read back."""

    op_id: str
    status: OperationStatus
    method: str
    url: str
    attempts: int
    seq: int
    http_status: int | None
    response_body: Any
    response_body_truncated: bool
    error_code: str | None
    error_message: str | None
    graph_request_id: str | None
    updated_at: datetime | None
    note: str | None = None

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> OperationRecord:
        raw_body = entity.get("ResponseBody") or None
        truncated = bool(entity.get("ResponseBodyTruncated", False))
        body: Any = raw_body
        if isinstance(raw_body, str) and not truncated:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body
        return cls(
            op_id=entity["RowKey"],
            status=OperationStatus(entity.get("Status", "Pending")),
            method=entity.get("Method", ""),
            url=entity.get("Url", ""),
            attempts=int(entity.get("Attempts", 0)),
            seq=int(entity.get("Seq", 0)),
            http_status=entity.get("HttpStatus"),
            response_body=body,
            response_body_truncated=truncated,
            error_code=entity.get("ErrorCode") or None,
            error_message=entity.get("ErrorMessage") or None,
            graph_request_id=entity.get("GraphRequestId") or None,
            updated_at=entity.get("UpdatedAt"),
            note=entity.get("Note") or None,
        )

    def to_json(self) -> dict[str, Any]:
        """The per-operation result a caller polls for."""
        result: dict[str, Any] = {
            "id": self.op_id,
            "status": self.status.value,
            "httpStatus": self.http_status,
            "attempts": self.attempts,
            "method": self.method,
            "url": self.url,
            "body": self.response_body,
            "graphRequestId": self.graph_request_id,
        }
        if self.response_body_truncated:
            result["bodyTruncated"] = True
        if self.note:
            result["note"] = self.note
        if self.error_code or self.error_message:
            result["error"] = {"code": self.error_code, "message": self.error_message}
        return result


@dataclass(slots=True)
class JobSummary:
    """The job's own row: what was submitted, and counts derived from its operation rows."""

    job_id: str
    total: int
    body_hash: str | None
    correlation_id: str | None
    source: str
    enqueued: bool = False
    queued_parts: int = 0
    reason: str | None = None
    action: str | None = None  # the connector action that built the job (batching.connector.actions)
    counts: dict[OperationStatus, int] = field(default_factory=dict)
    created_at: datetime | None = None
    etag: str | None = None

    @property
    def pending(self) -> int:
        """Operations without a final row (a job's rows may be written only as they finish)."""
        return max(0, self.total - sum(n for s, n in self.counts.items() if s.is_final))

    @property
    def status(self) -> JobStatus:
        if self.pending:
            return JobStatus.RUNNING
        if self.counts.get(OperationStatus.REJECTED, 0) == self.total:
            return JobStatus.REJECTED
        succeeded = self.counts.get(OperationStatus.SUCCEEDED, 0)
        if succeeded == self.total:
            return JobStatus.SUCCEEDED
        return JobStatus.PARTIALLY_SUCCEEDED if succeeded else JobStatus.FAILED

    @property
    def done(self) -> bool:
        return self.status is not JobStatus.RUNNING

    def counts_json(self) -> dict[str, int]:
        counts = {s.value.lower(): self.counts.get(s, 0) for s in OperationStatus}
        counts[OperationStatus.PENDING.value.lower()] = self.pending
        return counts

    def to_entity(self, now: datetime) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": self.job_id,
            "RowKey": SUMMARY_ROW_KEY,
            "Kind": "job",
            "Status": self.status.value,
            "Total": self.total,
            "BodyHash": self.body_hash,
            "CorrelationId": self.correlation_id,
            "Source": self.source,
            "Enqueued": self.enqueued,
            "QueuedParts": self.queued_parts,
            "Reason": self.reason,
            "Action": self.action,
            "CreatedAt": self.created_at or now,
            "UpdatedAt": now,
        }
        for status in OperationStatus:
            entity[status.value] = self.counts.get(status, 0)
        entity[OperationStatus.PENDING.value] = self.pending
        return {key: value for key, value in entity.items() if value is not None}

    @classmethod
    def from_entity(cls, entity: dict[str, Any], etag: str | None = None) -> JobSummary:
        return cls(
            job_id=entity["PartitionKey"],
            total=int(entity.get("Total", 0)),
            body_hash=entity.get("BodyHash"),
            correlation_id=entity.get("CorrelationId") or None,
            source=entity.get("Source", ""),
            enqueued=bool(entity.get("Enqueued", False)),
            queued_parts=int(entity.get("QueuedParts", 0)),
            reason=entity.get("Reason") or None,
            action=entity.get("Action") or None,
            counts={s: int(entity.get(s.value, 0)) for s in OperationStatus},
            created_at=entity.get("CreatedAt"),
            etag=etag,
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


def _encode_body(body: Any) -> tuple[str | None, bool]:
    """Graph's answer as ASCII JSON: whatever it holds (astral characters, lone surrogates),
    the stored text is exactly as long in UTF-16 as in characters, so the cut keeps it under
    the Table service's 64 KiB per property, and it always encodes."""
    if body is None:
        return None, False
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    if len(text) <= MAX_RESPONSE_BODY_CHARS:
        return text, False
    return text[:MAX_RESPONSE_BODY_CHARS], True


def _clip(text: str | None, limit: int) -> str | None:
    """Text the Table service stores whatever Graph sent: no lone surrogates, at most `limit`
    characters (twice that in UTF-16 units at worst, far under 64 KiB)."""
    if text is None:
        return None
    text = text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)
