"""What a Graph answer means for an operation: done, already done, not replicated yet,
try again later, or failed. Codes are matched first, message texts second (Graph's texts
change; its codes less so).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from batching.graph.client import ItemResponse
from batching.graph.throttling import THROTTLED
from batching.models import WorkItem
from batching.retry import RetryPolicy

FAILED_DEPENDENCY: Final = 424
_ALREADY_MEMBER = re.compile(r"added object references already exist", re.IGNORECASE)
_NOT_REPLICATED = re.compile(r"(don't|do not|does not) exist", re.IGNORECASE)


class Verdict(Enum):
    SUCCEEDED = "succeeded"
    ALREADY_EXISTS = "already exists"  # done before (a retry after a crash, or a re-run)
    USER_EXISTS = "user exists"  # done before; look the user up so references still resolve
    NOT_REPLICATED = "not replicated"
    THROTTLED = "throttled"  # Graph's limits: wait as told; never an error of the operation
    TRANSIENT = "transient"
    FAILED = "failed"


def classify(work: WorkItem, answer: ItemResponse, policy: RetryPolicy) -> Verdict:
    status = answer.status
    if 200 <= status < 300:
        return Verdict.SUCCEEDED
    if status == THROTTLED:
        return Verdict.THROTTLED
    if policy.is_transient(status) or status == FAILED_DEPENDENCY:
        return Verdict.TRANSIENT
    operation = work.operation
    message = answer.error_message or ""
    if status == 400 and operation.method == "POST":
        if operation.url.split("?", 1)[0].lower() == "/users" and _is_object_conflict(answer):
            return Verdict.USER_EXISTS
        if operation.url.lower().endswith("/$ref") and _ALREADY_MEMBER.search(message):
            return Verdict.ALREADY_EXISTS
    if work.follows_create and (status == 404 or (status == 400 and _NOT_REPLICATED.search(message))):
        return Verdict.NOT_REPLICATED
    return Verdict.FAILED


def _is_object_conflict(answer: ItemResponse) -> bool:
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if isinstance(details, list) and any(
        isinstance(d, dict) and d.get("code") == "ObjectConflict" for d in details
    ):
        return True
    return "userPrincipalName already exists" in (answer.error_message or "")
