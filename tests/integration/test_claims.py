"""One sender per operation: concurrent deliveries, duplicate submissions, and a send whose
outcome a dead host never recorded."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from typing import Any

from batching.models import Operation, WorkItem
from batching.records import utcnow
from batching.service import ProvisioningService
from batching.settings import Settings
from batching.workqueue import pack_work
from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import put_message, rows, wait_until


def _sent(graph: ServedEmulator) -> Counter[tuple[str, str, str]]:
    return Counter(
        (item["method"], item["url"], json.dumps(item.get("body"), sort_keys=True))
        for call in graph.emulator.batch_calls()
        for item in call["items"]
    )


def _wait_for_final_rows(env: dict[str, str], job_id: str, count: int, *, timeout: float) -> None:
    def done() -> bool:
        found = rows(env, job_id)
        return len(found) == count and all(r["Status"] != "Pending" for r in found.values())

    wait_until(done, timeout=timeout)


def _onboarding(job_id: str, count: int) -> dict[str, Any]:
    operations: list[dict[str, Any]] = [
        {
            "id": "group",
            "method": "POST",
            "url": "/groups",
            "body": {
                "displayName": f"{job_id} team",
                "mailNickname": job_id,
                "mailEnabled": False,
                "securityEnabled": True,
            },
        }
    ]
    for n in range(count):
        operations.append(
            {
                "id": f"user{n}",
                "method": "POST",
                "url": "/users",
                "body": {"userPrincipalName": f"{job_id}-{n}@contoso.com", "displayName": f"User {n}"},
            }
        )
        operations.append(
            {
                "id": f"member{n}",
                "method": "POST",
                "url": "/groups/{{group.id}}/members/$ref",
                "body": {
                    "@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{{{{user{n}.id}}}}"
                },
            }
        )
    return {"jobId": job_id, "operations": operations}


def test_the_same_job_dropped_twice_at_once_sends_each_operation_once(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.configure({"latencyMs": 300})
    text = json.dumps(_onboarding("twice", 10))
    put_message(app_env, text, as_base64=False)
    put_message(app_env, text, as_base64=True)

    _wait_for_final_rows(app_env, "twice", 21, timeout=60)

    found = rows(app_env, "twice")
    assert {r["Status"] for r in found.values()} == {"Succeeded"}, [
        (k, r["Status"], r.get("ErrorCode"), r.get("ErrorMessage"))
        for k, r in found.items()
        if r["Status"] != "Succeeded"
    ]
    assert max(_sent(graph).values()) == 1
    created = [key for kind, key in graph.emulator.tenant.created]
    assert len(created) == len(set(created)) == 11


async def test_two_deliveries_of_one_work_message_at_once_send_it_once(
    graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.configure({"latencyMs": 300})
    items = [
        WorkItem(
            operation=Operation(
                id=f"user{n}",
                method="POST",
                url="/users",
                headers={"Content-Type": "application/json"},
                body={"userPrincipalName": f"both-{n}@contoso.com", "displayName": "x"},
            ),
            seq=n,
        )
        for n in range(30)
    ]
    (message,) = pack_work("both", None, items, priority="high")
    text = message.model_dump_json(by_alias=True)
    settings = Settings.model_validate(app_env)
    first, second = ProvisioningService.create(settings), ProvisioningService.create(settings)
    try:
        await first.ensure_resources()
        await asyncio.gather(
            first.handle_queue_message(text, "m1", 1, source="work"),
            second.handle_queue_message(text, "m1", 2, source="work"),
        )
        # A later delivery of the same message finds everything final and sends nothing.
        sent = len(graph.emulator.batch_calls())
        await first.handle_queue_message(text, "m1", 3, source="work")
        assert len(graph.emulator.batch_calls()) == sent
    finally:
        await first.aclose()
        await second.aclose()

    assert max(_sent(graph).values()) == 1
    assert len(graph.emulator.tenant.created) == 30
    assert {r["Status"] for r in rows(app_env, "both").values()} == {"Succeeded"}


async def test_a_create_claimed_by_a_host_that_died_is_repeated_only_when_repeating_is_harmless(
    graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    def create(op_id: str, url: str, body: dict[str, Any]) -> WorkItem:
        operation = Operation(
            id=op_id, method="POST", url=url, headers={"Content-Type": "application/json"}, body=body
        )
        return WorkItem(operation=operation, seq=len(op_id))

    group = {"displayName": "Falcon", "mailEnabled": False, "securityEnabled": True, "mailNickname": "falcon"}
    items = [
        create("group", "/groups", group),
        create("keyed", "/groups", {**group, "mailNickname": "hawk", "uniqueName": "hawk"}),
        create("user", "/users", {"userPrincipalName": "doubt@contoso.com", "displayName": "Doubt"}),
    ]
    (message,) = pack_work("doubt", None, items)
    text = message.model_dump_json(by_alias=True)
    service = ProvisioningService.create(Settings.model_validate({**app_env, "CLAIM_TIMEOUT_SECONDS": "60"}))
    try:
        await service.ensure_resources()
        await service.handle_queue_message(text, "m", 1, source="work")
        assert {r["Status"] for r in rows(app_env, "doubt").values()} == {"Succeeded"}
        # What a host leaves when it dies after Graph acted and before the rows were written:
        # claims two minutes old, no outcome.
        for op_id in ("group", "keyed", "user"):
            await service.store._table.upsert_entity(
                {
                    "PartitionKey": "doubt",
                    "RowKey": op_id,
                    "Status": "Pending",
                    "Ticket": message.ticket,
                    "ClaimedAt": utcnow() - timedelta(minutes=2),
                }
            )
        await service.handle_queue_message(text, "m", 2, source="work")
    finally:
        await service.aclose()

    found = rows(app_env, "doubt")
    assert found["group"]["Status"] == "Failed"
    assert found["group"]["ErrorCode"] == "outcomeUnknown"
    assert (found["keyed"]["Status"], found["keyed"]["Note"]) == ("Succeeded", "already existed")
    assert (found["user"]["Status"], found["user"]["Note"]) == ("Succeeded", "already existed")
    assert json.loads(found["keyed"]["ResponseBody"])["id"]
    assert Counter(kind for kind, _ in graph.emulator.tenant.created) == {"group": 2, "user": 1}


def test_a_create_that_cannot_be_repeated_is_not_sent_again_after_an_unclear_answer(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    group = {"displayName": "Osprey", "mailEnabled": False, "securityEnabled": True, "mailNickname": "osprey"}
    graph.emulator.configure(
        {
            "faults": {
                "seed": 1,
                "itemErrors": {
                    "share": 1.0,
                    "answers": [{"status": 504, "acted": True}],
                    "methods": ["POST"],
                },
            }
        }
    )
    document = {
        "jobId": "unclear",
        "operations": [
            {"id": "group", "method": "POST", "url": "/groups", "body": group},
            {"id": "title", "method": "PATCH", "url": "/groups/{{group.id}}", "body": {"description": "x"}},
        ],
    }
    put_message(app_env, json.dumps(document), as_base64=False)

    _wait_for_final_rows(app_env, "unclear", 2, timeout=30)
    found = rows(app_env, "unclear")
    assert (found["group"]["Status"], found["group"]["ErrorCode"]) == ("Failed", "outcomeUnknown")
    assert found["title"]["Status"] == "Skipped"
    assert [item["method"] for call in graph.emulator.batch_calls() for item in call["items"]] == ["POST"]
