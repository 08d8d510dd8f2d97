"""The webhook pair end to end: a flow subscribes with its callback URL (201 + Location), waits,
and gets the results POSTed once; unsubscribing stops a pending callback. Two deliveries at
once, a redelivery and a delivery that died mid-send still POST once. Real Azurite, the Graph
emulator, and a local receiver in place of Power Automate."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from azure.data.tables import TableClient, UpdateMode

from batching.connector.callbacks import CHECK_MIN_SECONDS
from batching.records import OperationOutcome, OperationStatus
from batching.service import Accepted, Invalid, ProvisioningService
from batching.settings import Settings
from devhost.stack import DevHost, ServedEmulator
from tests.integration.callback_receiver import callback_receiver
from tests.integration.helpers import all_partitions, poll_job, summary, wait_until


def _job(job_id: str, callback_url: str | None, count: int = 3) -> dict[str, Any]:
    operations: list[dict[str, Any]] = [
        {
            "id": f"title-{i}",
            "method": "PATCH",
            "url": f"/users/user{i}@contoso.com",
            "body": {"jobTitle": "Pilot"},
        }
        for i in range(1, count + 1)
    ]
    operations.append(
        {"id": "nobody", "method": "PATCH", "url": "/users/nobody@contoso.com", "body": {"jobTitle": "Pilot"}}
    )
    document: dict[str, Any] = {"jobId": job_id, "correlationId": "flow-run-7", "operations": operations}
    if callback_url is not None:
        document["callbackUrl"] = callback_url
    return document


def test_the_webhook_action_posts_the_results_once_to_a_receiver_that_failed_twice(
    receiver_host: DevHost, receiver_env: dict[str, str], graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(3)
    secret = f"S3cr3tSig{uuid.uuid4().hex}"
    with callback_receiver(fail_first=2) as receiver, httpx.Client(timeout=30) as client:
        subscribed = client.post(
            f"{receiver_host.base_url}/api/webhooks/jobs?code={receiver_host.key}",
            json=_job("hook-1", receiver.url(secret)),
        )
        assert subscribed.status_code == 201, subscribed.text
        assert (
            subscribed.headers["Location"]
            == f"{receiver_host.base_url}/api/webhooks/jobs/hook-1?code={receiver_host.key}"
        )
        assert subscribed.json()["jobId"] == "hook-1"
        assert secret not in subscribed.text
        assert secret not in str(subscribed.headers)

        wait_until(lambda: receiver.taken, timeout=60)
        time.sleep(CHECK_MIN_SECONDS + 2)  # a second POST would have come by now
        final = client.get(f"{receiver_host.base_url}/api/jobs/hook-1", headers=receiver_host.headers)
        # Power Automate unsubscribes once the action has its results: nothing changes.
        assert client.delete(subscribed.headers["Location"]).status_code == 204

    assert receiver.attempts == 3  # 503, 503, then taken
    [taken] = receiver.taken
    assert taken.path.endswith(f"sig={secret}")
    assert taken.headers["content-type"] == "application/json"
    assert "authorization" not in taken.headers
    assert "x-functions-key" not in taken.headers
    # The callback body is the 200 answer of the status URL, keyless (the receiver is no caller).
    assert final.status_code == 200
    assert secret not in final.text
    assert taken.body == {**final.json(), "statusUrl": f"{receiver_host.base_url}/api/jobs/hook-1"}
    results = taken.body
    assert results["status"] == "PartiallySucceeded"
    assert results["correlationId"] == "flow-run-7"
    assert results["counts"] == {"pending": 0, "succeeded": 3, "failed": 1, "skipped": 0, "rejected": 0}
    assert [op["id"] for op in results["operations"]] == ["title-1", "title-2", "title-3", "nobody"]
    assert results["operations"][3]["httpStatus"] == 404

    row = summary(receiver_env, "hook-1")
    assert (row["CallbackState"], row["CallbackAttempts"]) == ("Delivered", 3)
    stored = json.dumps(all_partitions(receiver_env), default=str)
    assert secret not in stored
    assert "/workflows/run/actions/wait" not in stored
    assert secret not in receiver_host.log()


def test_unsubscribing_stops_a_pending_callback_and_the_job_runs_on(
    receiver_host: DevHost, receiver_env: dict[str, str], graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(3)
    with callback_receiver() as receiver, httpx.Client(timeout=30) as client:
        subscribed = client.post(
            f"{receiver_host.base_url}/api/webhooks/jobs?code={receiver_host.key}",
            json=_job("hook-2", receiver.url("sig2")),
        )
        assert subscribed.status_code == 201, subscribed.text
        assert client.delete(subscribed.headers["Location"]).status_code == 204
        assert client.delete(subscribed.headers["Location"]).status_code == 204  # again: still stopped

        answers = poll_job(client, f"{receiver_host.base_url}/api/jobs/hook-2?code={receiver_host.key}")
        assert answers[-1].status_code == 200
        time.sleep(CHECK_MIN_SECONDS + 3)  # the callback's first look at the job is past
        unknown = client.delete(
            f"{receiver_host.base_url}/api/webhooks/jobs/no-such-job", headers=receiver_host.headers
        )

    assert receiver.attempts == 0
    assert summary(receiver_env, "hook-2")["CallbackState"] == "Cancelled"
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "jobId"


def test_a_callback_url_that_is_missing_or_not_allowed_is_a_400_naming_callback_url(
    receiver_host: DevHost, devhost: DevHost
) -> None:
    secret = f"S3cr3tSig{uuid.uuid4().hex}"
    with httpx.Client(timeout=30, headers=receiver_host.headers) as client:
        missing = client.post(f"{receiver_host.base_url}/api/webhooks/jobs", json=_job("hook-3", None))
        elsewhere = client.post(
            f"{receiver_host.base_url}/api/webhooks/jobs",
            json=_job("hook-4", f"https://evil.example/x?sig={secret}"),
        )
        private = client.post(
            f"{receiver_host.base_url}/api/jobs", json=_job("hook-5", f"https://10.0.0.8/x?sig={secret}")
        )
    # The default allow-list has no loopback address.
    loopback = httpx.post(
        f"{devhost.base_url}/api/jobs",
        json=_job("hook-6", "http://127.0.0.1:9/x"),
        headers=devhost.headers,
        timeout=30,
    )
    for answer in (missing, elsewhere, private, loopback):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == ["callbackUrl"]
        assert secret not in answer.text


async def test_two_deliveries_at_once_a_redelivery_and_a_delivery_that_died_mid_send_post_once(
    app_env: dict[str, str],
) -> None:
    """The delivery code itself, in this process, on the real storage: the same message handled
    twice at once and once more after, then a callback claimed by a delivery that died."""
    env = {**app_env, "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "CLAIM_TIMEOUT_SECONDS": "5"}
    service = ProvisioningService.create(Settings(**env))  # type: ignore[arg-type]
    await service.ensure_resources()
    try:
        with callback_receiver() as receiver:
            twice = await _finished_job_with_callback(service, env, "twice", receiver.url("a"))
            await asyncio.gather(*(service.handle_callback_message(twice, 1) for _ in range(2)))
            await service.handle_callback_message(twice, 2)
            assert len(receiver.taken) == 1
            assert summary(env, "twice")["CallbackState"] == "Delivered"

            died = await _finished_job_with_callback(service, env, "died", receiver.url("b"))
            _claim_as_a_delivery_that_died(env, "died", seconds_ago=1)
            await service.handle_callback_message(died, 2)  # the claim may still be sending
            assert len(receiver.taken) == 1
            _claim_as_a_delivery_that_died(env, "died", seconds_ago=60)
            await service.handle_callback_message(died, 3)  # timed out: taken over
            await service.handle_callback_message(died, 4)
            assert len(receiver.taken) == 2
            assert receiver.taken[1].body["jobId"] == "died"
            assert summary(env, "died")["CallbackState"] == "Delivered"
    finally:
        await service.aclose()


async def test_a_door_without_the_apps_base_url_refuses_a_callback_url(app_env: dict[str, str]) -> None:
    """The operator CLI submits through the same service, but no one could arm a callback for
    it: the callbackUrl is refused, naming it, rather than silently never called."""
    service = ProvisioningService.create(Settings(**{**app_env, "CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}))  # type: ignore[arg-type]
    await service.ensure_resources()
    try:
        document = {
            "callbackUrl": "http://127.0.0.1:9/x",
            "operations": [{"id": "a", "method": "GET", "url": "/users"}],
        }
        refused = await service.submit(json.dumps(document).encode())
        assert isinstance(refused, Invalid)
        assert [problem.field for problem in refused.problems] == ["callbackUrl"]
    finally:
        await service.aclose()


async def _finished_job_with_callback(
    service: ProvisioningService, env: dict[str, str], job_id: str, url: str
) -> str:
    """A submitted job with a callback whose one operation has its final row, and the text of
    its callback message as the queue holds it."""
    document = {
        "jobId": job_id,
        "callbackUrl": url,
        "operations": [{"id": "a", "method": "GET", "url": "/users"}],
    }
    accepted = await service.submit(json.dumps(document).encode(), base_url="http://app.example")
    assert isinstance(accepted, Accepted)
    await service.store.record(
        job_id,
        None,
        [OperationOutcome("a", OperationStatus.SUCCEEDED, "GET", "/users", 1, 200, {"value": []}, seq=0)],
    )
    return json.dumps(
        {
            "kind": "provisioning.callback",
            "jobId": job_id,
            "callbackId": summary(env, job_id)["CallbackId"],
            "url": url,
            "statusUrl": f"http://app.example/api/jobs/{job_id}",
        }
    )


def _claim_as_a_delivery_that_died(env: dict[str, str], job_id: str, seconds_ago: int) -> None:
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], env["RESULTS_TABLE"]) as table:
        table.upsert_entity(
            {
                "PartitionKey": job_id,
                "RowKey": "",
                "CallbackState": "Sending",
                "CallbackClaimedAt": datetime.now(UTC) - timedelta(seconds=seconds_ago),
                "CallbackNonce": "gone",
            },
            mode=UpdateMode.MERGE,
        )


async def test_a_callback_is_given_up_after_max_attempts_or_at_once_when_refused(
    app_env: dict[str, str],
) -> None:
    """Retried until a bound, then recorded as given up with the reason (never the URL)."""
    env = {**app_env, "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "MAX_ATTEMPTS": "2"}
    service = ProvisioningService.create(Settings(**env))  # type: ignore[arg-type]
    await service.ensure_resources()
    try:
        with callback_receiver(fail_first=10, fail_status=503) as failing:
            message = await _finished_job_with_callback(service, env, "unavailable", failing.url("c"))
            await service.handle_callback_message(message, 1)
            row = summary(env, "unavailable")
            assert (row["CallbackState"], row["CallbackAttempts"]) == ("Waiting", 1)
            await service.handle_callback_message(message, 1)  # the retry, as the queue hands it back
            await service.handle_callback_message(message, 1)  # and any later copy: nothing more
            assert failing.attempts == 2
            row = summary(env, "unavailable")
            assert (row["CallbackState"], row["CallbackAttempts"]) == ("GaveUp", 2)
            assert row["CallbackError"] == "answered 503"

        with callback_receiver(fail_first=10, fail_status=404) as gone:
            message = await _finished_job_with_callback(service, env, "gone", gone.url("d"))
            await service.handle_callback_message(message, 1)
            assert gone.attempts == 1
            row = summary(env, "gone")
            assert (row["CallbackState"], row["CallbackError"]) == ("GaveUp", "answered 404")
    finally:
        await service.aclose()
