"""Reading what the app wrote, straight from Azurite (the real storage, never a mock)."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient


def rows(env: dict[str, str], job_id: str) -> dict[str, dict[str, Any]]:
    """Operation rows of a job by operation id (the summary row, RowKey '', left out)."""
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], env["RESULTS_TABLE"]) as table:
        entities = table.query_entities("PartitionKey eq @pk", parameters={"pk": job_id})
        try:
            return {e["RowKey"]: dict(e) for e in entities if e["RowKey"] != ""}
        except ResourceNotFoundError:  # the app creates its table on first use
            return {}


def summary(env: dict[str, str], job_id: str) -> dict[str, Any]:
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], env["RESULTS_TABLE"]) as table:
        return dict(table.get_entity(job_id, ""))


def all_partitions(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    with TableClient.from_connection_string(env["AzureWebJobsStorage"], env["RESULTS_TABLE"]) as table:
        result: dict[str, list[dict[str, Any]]] = {}
        try:
            for entity in table.list_entities():
                result.setdefault(entity["PartitionKey"], []).append(dict(entity))
        except ResourceNotFoundError:
            return {}
        return result


def put_message(
    env: dict[str, str], text: str, *, as_base64: bool, queue_setting: str = "PROVISIONING_QUEUE"
) -> None:
    """Drop a message as a producer would (or, with `queue_setting`, on another of the app's queues)."""
    with QueueClient.from_connection_string(env["AzureWebJobsStorage"], env[queue_setting]) as queue:
        with contextlib.suppress(Exception):
            queue.create_queue()
        queue.send_message(base64.b64encode(text.encode()).decode() if as_base64 else text)


def poison_messages(env: dict[str, str], queue_setting: str = "PROVISIONING_QUEUE") -> list[str]:
    name = f"{env[queue_setting]}-poison"
    with QueueClient.from_connection_string(env["AzureWebJobsStorage"], name) as queue:
        try:
            return [m.content for m in queue.peek_messages(max_messages=32)]
        except Exception:
            return []


def job(ops: list[dict[str, Any]], job_id: str | None = None) -> str:
    document: dict[str, Any] = {"operations": ops}
    if job_id:
        document["jobId"] = job_id
    return json.dumps(document)


def patch_users(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"u{i}",
            "method": "PATCH",
            "url": f"/users/user{i}@contoso.com",
            "body": {"jobTitle": f"Title {i}"},
        }
        for i in range(1, count + 1)
    ]


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def poll_job(client: httpx.Client, url: str, timeout: float = 60.0) -> list[httpx.Response]:
    """Poll like Power Automate: follow Location while 202; return every answer."""
    answers = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(url)
        answers.append(response)
        if response.status_code != 202:
            return answers
        time.sleep(0.3)
    raise TimeoutError(f"job at {url} still running after {timeout} s")


def queue_length(env: dict[str, str]) -> int:
    """Messages still on the provisioning, work and bulk queues, visible or not (a handler that
    never returns keeps its message)."""
    total = 0
    for name in (env["PROVISIONING_QUEUE"], env["WORK_QUEUE"], env["BULK_QUEUE"]):
        with QueueClient.from_connection_string(env["AzureWebJobsStorage"], name) as queue:
            try:
                total += queue.get_queue_properties().approximate_message_count or 0
            except ResourceNotFoundError:
                continue
    return total


def bulk_container(env: dict[str, str]) -> ContainerClient:
    container = ContainerClient.from_connection_string(env["AzureWebJobsStorage"], env["BULK_CONTAINER"])
    with contextlib.suppress(Exception):
        container.create_container()
    return container


def blob_names(env: dict[str, str]) -> set[str]:
    with bulk_container(env) as container:
        return set(container.list_blob_names())


def blob_json(env: dict[str, str], name: str) -> Any:
    with bulk_container(env) as container:
        return json.loads(container.download_blob(name).readall())


def run_bulk_pickup(base_url: str) -> None:
    """Run the timer function once now, the way the Functions admin API does."""
    httpx.post(f"{base_url}/admin/functions/bulk_user_updates", json={"input": ""}).raise_for_status()
