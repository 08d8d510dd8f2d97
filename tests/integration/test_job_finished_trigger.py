"""The webhook trigger end to end: a flow subscribes (201 + Location), each job that finishes
and matches its filters is POSTed to it once, unsubscribing stops it. Real Azurite, the Graph
emulator, and a local receiver in place of Power Automate."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from batching.connector.callbacks import CHECK_MIN_SECONDS
from batching.connector.subscriptions import DELIVERY_KIND, DeliveryMessage, Subscription, WatchMessage
from batching.records import OperationOutcome, OperationStatus
from batching.service import Accepted, ProvisioningService
from batching.settings import Settings
from devhost.stack import DevHost, ServedEmulator
from tests.integration.callback_receiver import callback_receiver
from tests.integration.helpers import all_partitions, poll_job, summary, wait_until


def _job(job_id: str, correlation_id: str) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "correlationId": correlation_id,
        "operations": [
            {
                "id": "title",
                "method": "PATCH",
                "url": "/users/user1@contoso.com",
                "body": {"jobTitle": "Pilot"},
            },
            {
                "id": "nobody",
                "method": "PATCH",
                "url": "/users/nobody@contoso.com",
                "body": {"jobTitle": "x"},
            },
        ],
    }


def _stored(env: dict[str, str]) -> list[dict[str, Any]]:
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], env["SUBSCRIPTIONS_TABLE"]) as table:
        return [dict(entity) for entity in table.list_entities()]


def test_a_subscribed_flow_gets_each_matching_job_once_and_nothing_after_it_unsubscribes(
    receiver_host: DevHost, receiver_env: dict[str, str], graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    secret = f"S3cr3tSig{uuid.uuid4().hex}"
    base = receiver_host.base_url
    with callback_receiver(fail_first=2) as receiver, httpx.Client(timeout=30) as client:
        subscription = {"callbackUrl": receiver.url(secret), "correlationIdPrefix": "hr-"}
        first = client.post(f"{base}/api/webhooks/subscriptions?code={receiver_host.key}", json=subscription)
        # Power Automate subscribes again when the flow is saved: the same subscription.
        again = client.post(f"{base}/api/webhooks/subscriptions?code={receiver_host.key}", json=subscription)
        for answer in (first, again):
            assert answer.status_code == 201, answer.text
            assert secret not in answer.text
            assert secret not in str(answer.headers)
        assert again.headers["Location"] == first.headers["Location"]
        location = first.headers["Location"]
        sub_id = first.json()["subscriptionId"]
        assert location == f"{base}/api/webhooks/subscriptions/{sub_id}?code={receiver_host.key}"
        assert first.json() == {
            "subscriptionId": sub_id,
            "onlyWithFailures": False,
            "correlationIdPrefix": "hr-",
        }
        stored = _stored(receiver_env)
        assert [e["RowKey"] for e in stored if e["PartitionKey"] == "subscriptions"] == [sub_id]

        for job_id, correlation_id in (("hr-job", "hr-2041"), ("sales-job", "sales-2041")):
            submitted = client.post(
                f"{base}/api/jobs", json=_job(job_id, correlation_id), headers=receiver_host.headers
            )
            assert submitted.status_code == 202, submitted.text
        wait_until(lambda: receiver.taken, timeout=60)
        assert poll_job(client, f"{base}/api/jobs/sales-job?code={receiver_host.key}")[-1].status_code == 200
        time.sleep(CHECK_MIN_SECONDS + 3)  # a second POST, or the other job's, would have come by now
        final = client.get(f"{base}/api/jobs/hr-job", headers=receiver_host.headers)

        assert client.delete(location).status_code == 204
        after = client.post(
            f"{base}/api/jobs", json=_job("hr-after", "hr-2042"), headers=receiver_host.headers
        )
        assert after.status_code == 202
        assert poll_job(client, f"{base}/api/jobs/hr-after?code={receiver_host.key}")[-1].status_code == 200
        time.sleep(CHECK_MIN_SECONDS + 3)
        gone = client.delete(location)

    assert receiver.attempts == 3  # 503, 503, then taken; nothing for sales-job or hr-after
    [taken] = receiver.taken
    assert taken.path.endswith(f"sig={secret}")
    assert "authorization" not in taken.headers
    assert "x-functions-key" not in taken.headers
    # The same document the status URL answers with 200, its status URL keyless.
    assert final.status_code == 200
    assert taken.body == {**final.json(), "statusUrl": f"{base}/api/jobs/hr-job"}
    assert (taken.body["jobId"], taken.body["status"]) == ("hr-job", "PartiallySucceeded")
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["field"] == "subscriptionId"
    assert not [e for e in _stored(receiver_env) if e["PartitionKey"] == "subscriptions"]
    # The URL is only ever in the subscriptions table: no result row, log line or answer has it.
    assert secret not in json.dumps(all_partitions(receiver_env), default=str)
    assert secret not in receiver_host.log()


def test_a_callback_url_off_the_allow_list_or_a_bad_filter_is_a_400_naming_the_field(
    receiver_host: DevHost, receiver_env: dict[str, str]
) -> None:
    secret = f"S3cr3tSig{uuid.uuid4().hex}"
    url = f"{receiver_host.base_url}/api/webhooks/subscriptions"
    with httpx.Client(timeout=30, headers=receiver_host.headers) as client:
        elsewhere = client.post(url, json={"callbackUrl": f"https://evil.example/x?sig={secret}"})
        private = client.post(url, json={"callbackUrl": f"https://10.0.0.8/x?sig={secret}"})
        missing = client.post(url, json={"correlationIdPrefix": "hr-"})
        bad_filters = client.post(
            url,
            json={"callbackUrl": "http://127.0.0.1:9/x", "onlyWithFailures": "sometimes", "action": "fly"},
        )
        bad_id = client.delete(f"{url}/not-an-id")
    for answer in (elsewhere, private, missing):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == ["callbackUrl"]
        assert secret not in answer.text
    assert bad_filters.status_code == 400
    assert sorted(e["field"] for e in bad_filters.json()["errors"]) == ["action", "onlyWithFailures"]
    assert "sometimes" not in bad_filters.text
    assert bad_id.status_code == 400
    assert [e["field"] for e in bad_id.json()["errors"]] == ["subscriptionId"]
    assert not _stored(receiver_env)


async def test_two_fan_outs_and_deliveries_at_once_post_once_and_an_unsubscribed_flow_gets_nothing(
    app_env: dict[str, str],
) -> None:
    """The trigger's delivery code in this process, on the real storage: a watch handled twice
    and a delivery handled three times (two at once) POST once; a job submitted before the
    subscription is not offered to it; a delivery whose subscription is gone is cancelled."""
    env = {**app_env, "CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}
    service = ProvisioningService.create(Settings(**env))  # type: ignore[arg-type]
    await service.ensure_resources()
    try:
        with callback_receiver() as receiver:
            before = await _finished_job(service, "before")
            made = await service.subscriptions.subscribe(
                json.dumps({"callbackUrl": receiver.url("t")}).encode(), "http://app.example"
            )
            assert isinstance(made, Subscription)
            after = await _finished_job(service, "after")
            assert _summary_created(env, "before") < made.created_at <= _summary_created(env, "after")

            for job_id in (before, after):
                watch = WatchMessage(job_id=job_id).model_dump_json(by_alias=True)
                await asyncio.gather(*(service.handle_callback_message(watch, 1) for _ in range(2)))
            offered = _queued(env)
            assert (
                offered
                == [{"kind": DELIVERY_KIND, "jobId": "after", "subscriptionId": made.subscription_id}] * 2
            )

            delivery = json.dumps(offered[0])
            await asyncio.gather(*(service.handle_callback_message(delivery, 1) for _ in range(2)))
            await service.handle_callback_message(delivery, 2)
            assert len(receiver.taken) == 1
            assert receiver.taken[0].body["jobId"] == "after"
            assert receiver.taken[0].body["statusUrl"] == "http://app.example/api/jobs/after"

            assert await service.subscriptions.unsubscribe(made.subscription_id)
            late = await _finished_job(service, "late")
            late_delivery = DeliveryMessage(job_id=late, subscription_id=made.subscription_id)
            await service.handle_callback_message(late_delivery.model_dump_json(by_alias=True), 1)
            assert len(receiver.taken) == 1
            rows = {e["PartitionKey"]: e for e in _stored(env)}
            assert rows["delivery-after"]["CallbackState"] == "Delivered"
            assert rows["delivery-late"]["CallbackState"] == "Cancelled"
    finally:
        await service.aclose()


async def _finished_job(service: ProvisioningService, job_id: str) -> str:
    document = {"jobId": job_id, "operations": [{"id": "a", "method": "GET", "url": "/users"}]}
    accepted = await service.submit(json.dumps(document).encode(), watched=True)
    assert isinstance(accepted, Accepted)
    await service.store.record(
        job_id,
        None,
        [OperationOutcome("a", OperationStatus.SUCCEEDED, "GET", "/users", 1, 200, {"value": []}, seq=0)],
    )
    await asyncio.sleep(0.01)  # the next record's clock is later
    return job_id


def _summary_created(env: dict[str, str], job_id: str) -> datetime:
    created = summary(env, job_id)["CreatedAt"]
    assert isinstance(created, datetime)
    return created


def _queued(env: dict[str, str]) -> list[dict[str, Any]]:
    """The callback queue's trigger deliveries, taken off it (watch messages are left alone)."""
    found: list[dict[str, Any]] = []
    with QueueClient.from_connection_string(env["AzureWebJobsStorage"], env["CALLBACK_QUEUE"]) as queue:
        for message in queue.receive_messages(max_messages=32, visibility_timeout=60):
            document = json.loads(message.content)
            if document["kind"] == DELIVERY_KIND:
                found.append(document)
                queue.delete_message(message)
    return found
