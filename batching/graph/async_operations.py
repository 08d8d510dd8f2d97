"""Graph's long-running Teams operations: how `POST /teams` says where to follow it, and what
the operation says when it is read.

Graph answers `POST /teams` with **202 Accepted**, no body, a `Location` naming the
`teamsAsyncOperation` (`/teams('{team id}')/operations('{operation id}')`) and a
`Content-Location` naming the new team (`/teams('{team id}')`). The operation is read with
`GET /teams/{team id}/operations/{operation id}`; its `status` is `notStarted`, `inProgress`,
`succeeded` or `failed`, `targetResourceId` is the team's id and `error` says why it failed.
Graph's docs ask callers to wait more than 30 s between reads.

The header forms taken: relative or absolute (on a Graph host), keys quoted
(`teams('id')`) or not (`teams(id)`), or as path segments (`teams/id/operations/id`). What is
read is never followed as it is: the status URL is built from the two ids, each checked to be
one plain path segment, so the token still goes only to the configured Graph root.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from batching.allowlist import GRAPH_HOSTS
from batching.graph.throttling import header

ACCEPTED: Final = 202
# Graph's advice: "wait >30 seconds between checks".
DOCUMENTED_POLL_SECONDS: Final = 30.0

_KEY: Final = r"(?:\('(?P<{0}q>[^'/()]+)'\)|\((?P<{0}b>[^'/()]+)\)|/(?P<{0}s>[^'/()]+))"
_OPERATION_PATH: Final = re.compile(
    r"(?:/(?:v1\.0|beta))?/teams" + _KEY.format("team") + r"/operations" + _KEY.format("op") + r"/?",
    re.IGNORECASE,
)
_TEAM_PATH: Final = re.compile(r"(?:/(?:v1\.0|beta))?/teams" + _KEY.format("team") + r"/?", re.IGNORECASE)
# An id fit to stand as one path segment: no separators, escapes or control characters.
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")


class AsyncOperationStatus(StrEnum):
    """`teamsAsyncOperationStatus`; anything Graph may add later reads as `INVALID`."""

    INVALID = "invalid"
    NOT_STARTED = "notStarted"
    IN_PROGRESS = "inProgress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def running(self) -> bool:
        return self in (AsyncOperationStatus.NOT_STARTED, AsyncOperationStatus.IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class FollowPolicy:
    """How often a running operation is read again, and for how long in all."""

    interval_seconds: float = DOCUMENTED_POLL_SECONDS
    max_wait_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class TeamsOperation:
    """Where a Teams async operation is read, and the team it makes."""

    team_id: str
    operation_id: str

    @property
    def status_url(self) -> str:
        """`GET` this (relative to the Graph version root) to read the operation."""
        return f"/teams/{quote(self.team_id, safe=':@')}/operations/{quote(self.operation_id, safe=':@')}"


@dataclass(frozen=True, slots=True)
class OperationState:
    """What one read of the operation says."""

    status: AsyncOperationStatus
    target_id: str | None
    error_code: str | None
    error_message: str | None


def _path(value: str) -> str | None:
    """The path of a relative URL, or of an absolute one on a Graph host (None otherwise)."""
    value = value.strip()
    if value.startswith("/") and not value.startswith("//"):
        return value.split("?", 1)[0]
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or (parts.hostname or "").lower() not in GRAPH_HOSTS:
        return None
    if parts.username or parts.password or parts.port:
        return None
    return parts.path


def _key(match: re.Match[str], name: str) -> str | None:
    raw = match.group(f"{name}q") or match.group(f"{name}b") or match.group(f"{name}s")
    text = unquote(raw) if raw else ""
    return text if _PLAIN_ID.fullmatch(text) else None


def operation_from_headers(headers: Mapping[str, str]) -> TeamsOperation | None:
    """The operation a 202 answer names in `Location`, or None when it names none this app
    can read safely."""
    location = header(headers, "Location")
    path = _path(location) if location else None
    match = _OPERATION_PATH.fullmatch(path) if path else None
    if match is None:
        return None
    team, operation = _key(match, "team"), _key(match, "op")
    return TeamsOperation(team, operation) if team and operation else None


def team_of(status_url: str) -> str:
    """The team id in a status URL made by `TeamsOperation.status_url`."""
    segments = status_url.split("/")
    return unquote(segments[2]) if len(segments) > 2 else ""


def team_from_headers(headers: Mapping[str, str]) -> str | None:
    """The new team's id from `Content-Location` (`/teams('{id}')`), or None."""
    location = header(headers, "Content-Location")
    path = _path(location) if location else None
    match = _TEAM_PATH.fullmatch(path) if path else None
    return _key(match, "team") if match else None


def read_operation(body: Any) -> OperationState:
    """A `teamsAsyncOperation` body as a state; a body that is not one reads as `INVALID`."""
    if not isinstance(body, dict):
        return OperationState(AsyncOperationStatus.INVALID, None, None, None)
    value = body.get("status")
    known = {status.value for status in AsyncOperationStatus}
    status = (
        AsyncOperationStatus(value)
        if isinstance(value, str) and value in known
        else AsyncOperationStatus.INVALID
    )
    target = body.get("targetResourceId")
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return OperationState(
        status,
        target if isinstance(target, str) and target else None,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def created_team(team_id: str, operation: Any) -> dict[str, Any]:
    """The result recorded for a team create whose operation succeeded: the team's `id` (what
    `{{op.id}}` references and flows read), and the operation as Graph gave it."""
    return {"id": team_id, "teamsAsyncOperation": operation}
