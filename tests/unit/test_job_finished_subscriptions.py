"""The trigger's subscriptions: which finished jobs each one gets, and what a subscribe body
may hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from batching.connector.callback_urls import AllowedHosts
from batching.connector.subscriptions import (
    DeliveryMessage,
    Subscription,
    SubscriptionRequest,
    WatchMessage,
    subscription_id,
)
from batching.errors import problems_from_validation
from batching.records import JobSummary, OperationStatus

MADE = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
HOOKS = AllowedHosts.parse("default")
FLOW_URL = "https://prod-12.westeurope.logic.azure.com/workflows/abc/triggers/manual/run?sig=s3cret"


def _subscription(**filters: object) -> Subscription:
    return Subscription(
        subscription_id=subscription_id(FLOW_URL),
        url=FLOW_URL,
        base_url="https://app.example",
        only_with_failures=bool(filters.get("only_with_failures", False)),
        correlation_id_prefix=str(filters.get("correlation_id_prefix", "")),
        action=str(filters.get("action", "")),
        created_at=MADE,
    )


def _finished(
    *, failed: int = 0, correlation_id: str | None = "hr-1", action: str | None = None
) -> JobSummary:
    summary = JobSummary(
        job_id="j", total=2, body_hash="h", correlation_id=correlation_id, source="http", action=action
    )
    summary.counts = {OperationStatus.SUCCEEDED: 2 - failed, OperationStatus.FAILED: failed}
    summary.created_at = MADE + timedelta(seconds=1)
    return summary


def test_a_job_submitted_before_the_subscription_was_made_is_not_sent_to_it() -> None:
    earlier = _finished()
    earlier.created_at = MADE - timedelta(seconds=1)
    assert not _subscription().matches(earlier)
    assert _subscription().matches(_finished())


def test_only_with_failures_skips_jobs_where_everything_succeeded() -> None:
    assert not _subscription(only_with_failures=True).matches(_finished())
    assert _subscription(only_with_failures=True).matches(_finished(failed=1))


def test_the_correlation_id_prefix_and_action_filters_pick_their_jobs() -> None:
    by_prefix = _subscription(correlation_id_prefix="hr-")
    assert by_prefix.matches(_finished(correlation_id="hr-2041"))
    assert not by_prefix.matches(_finished(correlation_id="sales-2041"))
    assert not by_prefix.matches(_finished(correlation_id=None))
    by_action = _subscription(action="createUsers")
    assert by_action.matches(_finished(action="createUsers"))
    assert not by_action.matches(_finished(action=None))


def test_the_same_callback_url_is_the_same_subscription_and_its_id_does_not_reveal_it() -> None:
    assert subscription_id(FLOW_URL) == subscription_id(FLOW_URL)
    assert subscription_id(FLOW_URL) != subscription_id(FLOW_URL + "x")
    assert "s3cret" not in subscription_id(FLOW_URL)
    described = _subscription(action="createTeam").describe()
    assert described == {
        "subscriptionId": subscription_id(FLOW_URL),
        "onlyWithFailures": False,
        "correlationIdPrefix": "",
        "action": "createTeam",
    }
    assert FLOW_URL not in str(described)


def test_a_subscribe_body_names_each_bad_field_without_echoing_it() -> None:
    body = {"callbackUrl": "https://evil.example/x?sig=s3cret", "onlyWithFailures": "sometimes", "extra": 1}
    with pytest.raises(ValidationError) as raised:
        SubscriptionRequest.model_validate(body, context={"callback_hosts": HOOKS})
    problems = problems_from_validation(raised.value)
    assert sorted(p.field for p in problems) == ["callbackUrl", "extra", "onlyWithFailures"]
    assert "s3cret" not in str(problems)
    assert "sometimes" not in str(problems)


def test_the_trigger_messages_carry_no_callback_url() -> None:
    watch = WatchMessage(job_id="j").model_dump_json(by_alias=True)
    delivery = DeliveryMessage(job_id="j", subscription_id=subscription_id(FLOW_URL)).model_dump_json(
        by_alias=True
    )
    assert "sig" not in watch + delivery
    assert set(DeliveryMessage.model_fields) == {"kind", "job_id", "subscription_id"}
