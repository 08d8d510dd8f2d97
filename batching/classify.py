"""What a Graph answer means for an operation: done, already done, not replicated yet,
try again later, or failed. Codes are matched first, message texts second (Graph's texts
change; its codes less so).

"Already done" answers, per create (see `batching.idempotency` for how each create is sent
so that a second send is recognised, and how the existing object is read back):

- user: 400 with details code `ObjectConflict` (or "userPrincipalName already exists");
- member or owner reference: 400 "One or more added object references already exist";
- group upsert (`PATCH /groups(uniqueName=..)`, `Prefer: create-if-missing`): 204 without a
  body (Graph updated the group that exists), or 400 "... references already exist" when the
  body binds members or owners the group already has;
- channel: 400 (409 seen too) "Channel name already existed" / "... already exists", or the
  code `NameAlreadyExists`;
- team from a group (`PUT /groups/{id}/team`, `POST /teams` with `group@odata.bind`): 409;
- event with a `transactionId`: the code `ErrorDuplicateTransactionId` (400 or 409).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from batching.graph.async_operations import ACCEPTED, operation_from_headers, team_from_headers
from batching.graph.client import ItemResponse
from batching.graph.throttling import THROTTLED
from batching.idempotency import Create, create_kind
from batching.models import Operation, WorkItem
from batching.retry import RetryPolicy

FAILED_DEPENDENCY: Final = 424
CONFLICT: Final = 409
_ALREADY_MEMBER = re.compile(r"added object references already exist", re.IGNORECASE)
_NOT_REPLICATED = re.compile(r"(don't|do not|does not) exist", re.IGNORECASE)
_NAME_TAKEN = re.compile(r"already exist", re.IGNORECASE)
_NAME_TAKEN_CODE: Final = "NameAlreadyExists"
_DUPLICATE_TRANSACTION: Final = "ErrorDuplicateTransactionId"


class Verdict(Enum):
    SUCCEEDED = "succeeded"
    ALREADY_EXISTS = "already exists"  # done before (a retry after a crash, or a re-run)
    # Done before: read the object back (`idempotency.existing_lookup`, `found_object`) so the
    # operation's response is the object and references to it resolve.
    EXISTS = "exists"
    NOT_REPLICATED = "not replicated"
    # 202: Graph accepted it and carries it out in the background (`POST /teams`); follow the
    # operation its answer names (batching.graph.async_operations) to learn how it ended.
    ACCEPTED = "accepted"
    THROTTLED = "throttled"  # Graph's limits: wait as told; never an error of the operation
    TRANSIENT = "transient"
    FAILED = "failed"


def classify(
    work: WorkItem, answer: ItemResponse, policy: RetryPolicy, *, sent: Operation | None = None
) -> Verdict:
    """The verdict on Graph's `answer` to `work`. `sent` is the operation exactly as it was sent
    (references resolved, rewritten by `idempotency.repeatable`); by default `work.operation`."""
    operation = sent if sent is not None else work.operation
    status = answer.status
    if 200 <= status < 300:
        if create_kind(operation) is Create.GROUP_UPSERT and not _is_object(answer.body):
            return Verdict.EXISTS  # 204: the group with that uniqueName exists (and was updated)
        if status == ACCEPTED and (
            operation_from_headers(answer.headers) or team_from_headers(answer.headers)
        ):
            return Verdict.ACCEPTED
        return Verdict.SUCCEEDED
    if status == THROTTLED:
        return Verdict.THROTTLED
    if policy.is_transient(status) or status == FAILED_DEPENDENCY:
        return Verdict.TRANSIENT
    done = _already_done(operation, answer)
    if done is not None:
        return done
    message = answer.error_message or ""
    if work.follows_create and (status == 404 or (status == 400 and _NOT_REPLICATED.search(message))):
        return Verdict.NOT_REPLICATED
    return Verdict.FAILED


def _already_done(operation: Operation, answer: ItemResponse) -> Verdict | None:
    """EXISTS or ALREADY_EXISTS when an error answer says the create was done before."""
    kind = create_kind(operation)
    status, code, message = answer.status, answer.error_code, answer.error_message or ""
    if kind is Create.USER and status == 400 and _is_object_conflict(answer):
        return Verdict.EXISTS
    if kind is Create.REFERENCE and status == 400 and _ALREADY_MEMBER.search(message):
        return Verdict.ALREADY_EXISTS
    if kind is Create.GROUP_UPSERT and status == 400 and _ALREADY_MEMBER.search(message):
        return Verdict.EXISTS
    name_taken = code == _NAME_TAKEN_CODE or _NAME_TAKEN.search(message) is not None
    if kind is Create.CHANNEL and status in (400, CONFLICT) and name_taken:
        return Verdict.EXISTS
    if kind is Create.TEAM and status == CONFLICT:
        return Verdict.EXISTS
    if kind is Create.EVENT and status in (400, CONFLICT) and code == _DUPLICATE_TRANSACTION:
        return Verdict.EXISTS
    return None


def _is_object(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("id"), str)


def _is_object_conflict(answer: ItemResponse) -> bool:
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if isinstance(details, list) and any(
        isinstance(d, dict) and d.get("code") == "ObjectConflict" for d in details
    ):
        return True
    return "userPrincipalName already exists" in (answer.error_message or "")
