"""The claim rules: who may send an operation, given its row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batching.claims import NO_ROW, Claim, RowState, job_ticket, judge
from batching.records import OperationStatus

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_an_operation_without_a_row_or_claim_is_sent() -> None:
    assert judge(NO_ROW, "t1", NOW, 300).claim is Claim.SEND
    assert judge(RowState(OperationStatus.PENDING, "etag", "t1"), "t1", NOW, 300).claim is Claim.SEND
    assert judge(RowState(OperationStatus.PENDING, "etag", ""), "t1", NOW, 300).claim is Claim.SEND


def test_a_final_row_is_never_sent_again() -> None:
    for status in (OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.SKIPPED):
        assert judge(RowState(status, "etag", "t1"), "t1", NOW, 300).claim is Claim.NOT_OURS


def test_a_row_another_ticket_answers_for_is_left_to_it_however_old_its_claim() -> None:
    old = RowState(OperationStatus.PENDING, "etag", "t2", NOW - timedelta(days=1))
    assert judge(old, "t1", NOW, 300).claim is Claim.NOT_OURS
    handed = RowState(OperationStatus.PENDING, "etag", "t2")
    assert judge(handed, "t1", NOW, 300).claim is Claim.NOT_OURS


def test_a_young_claim_of_the_same_ticket_is_looked_at_again_when_it_times_out() -> None:
    young = RowState(OperationStatus.PENDING, "etag", "t1", NOW - timedelta(seconds=100))
    verdict = judge(young, "t1", NOW, 300)
    assert verdict.claim is Claim.DEFER
    assert verdict.wait_seconds == 200


def test_an_old_claim_of_the_same_ticket_means_its_delivery_died_mid_send() -> None:
    old = RowState(OperationStatus.PENDING, "etag", "t1", NOW - timedelta(seconds=301))
    assert judge(old, "t1", NOW, 300).claim is Claim.RESEND


def test_a_producers_job_is_named_by_its_queue_message_id() -> None:
    assert job_ticket("abc") == "q-abc"
    assert job_ticket("abc") != job_ticket("abd")
