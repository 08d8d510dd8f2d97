from __future__ import annotations

from typing import Any

import pytest

from batching.classify import Verdict, classify
from batching.graph.client import ItemResponse
from batching.models import Operation, WorkItem
from batching.processor import ReplicationPolicy
from batching.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5)


def _answer(
    status: int, message: str = "", code: str = "", details: list[dict[str, str]] | None = None
) -> ItemResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return ItemResponse(status, {}, {"error": error}, None)


def _work(method: str, url: str, *, follows_create: bool = False) -> WorkItem:
    return WorkItem(operation=Operation(id="x", method=method, url=url), follows_create=follows_create)  # type: ignore[arg-type]


def test_user_conflict_is_recognised_by_code_first() -> None:
    answer = _answer(400, "whatever the text says", "Request_BadRequest", [{"code": "ObjectConflict"}])
    assert classify(_work("POST", "/users"), answer, POLICY) is Verdict.EXISTS


def test_existing_member_reference_counts_as_done() -> None:
    answer = _answer(
        400,
        "One or more added object references already exist for the following modified properties: 'members'.",
    )
    assert classify(_work("POST", "/groups/g/members/$ref"), answer, POLICY) is Verdict.ALREADY_EXISTS


@pytest.mark.parametrize(
    "answer",
    [
        _answer(404, "Resource not found"),
        _answer(400, "One or more of the object references referenced in the request don't exist."),
    ],
)
def test_not_found_after_a_create_in_the_same_job_waits_for_replication(answer: ItemResponse) -> None:
    assert (
        classify(_work("PUT", "/groups/g/team", follows_create=True), answer, POLICY)
        is Verdict.NOT_REPLICATED
    )
    assert classify(_work("PUT", "/groups/g/team"), answer, POLICY) is Verdict.FAILED


@pytest.mark.parametrize("status", [503, 504, 0, 424])
def test_unavailable_and_no_answer_are_transient(status: int) -> None:
    assert classify(_work("GET", "/users/a"), _answer(status), POLICY) is Verdict.TRANSIENT


def test_429_is_throttling_not_an_error_of_the_operation() -> None:
    assert classify(_work("PATCH", "/users/a"), _answer(429), POLICY) is Verdict.THROTTLED


def test_replication_wait_grows_and_is_bounded() -> None:
    policy = ReplicationPolicy(first_delay_seconds=10, max_wait_seconds=900)
    waited, delays = 0.0, []
    while (delay := policy.next_delay(waited)) is not None:
        delays.append(delay)
        waited += delay
    assert delays == [10, 10, 20, 40, 80, 160, 320]
    assert waited <= 900
