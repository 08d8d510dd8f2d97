"""Bad input gets a clear answer: 400 naming every bad field, or Rejected rows + poison."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import all_partitions, poison_messages, put_message, rows, wait_until

GOOD = {"id": "a", "method": "GET", "url": "/users/a@contoso.com"}
JUNK = os.urandom(21 * 1024).hex()[: 21 * 1024]

CASES = {
    "bad-json": ('{"operations": [', {"body"}),
    "unknown-method": (json.dumps({"operations": [{**GOOD, "method": "FETCH"}]}), {"operations[0].method"}),
    "absolute-url": (
        json.dumps({"operations": [{**GOOD, "url": "https://evil.example/users"}]}),
        {"operations[0].url"},
    ),
    "protocol-relative-url": (
        json.dumps({"operations": [{**GOOD, "url": "//evil.example/users"}]}),
        {"operations[0].url"},
    ),
    "duplicate-ids": (json.dumps({"operations": [GOOD, {**GOOD, "id": "A"}]}), {"operations[1].id"}),
    "cycle": (
        json.dumps({"operations": [{**GOOD, "dependsOn": "b"}, {**GOOD, "id": "b", "dependsOn": ["a"]}]}),
        {"operations[0].dependsOn"},
    ),
    "junk-21kb": (JUNK, {"body"}),
    "many-bad-fields": (
        json.dumps(
            {
                "jobId": "not valid!",
                "operations": [
                    {"id": "x/y", "method": "GET", "url": "/users/a"},
                    {"id": "b", "method": "PATCH", "url": "/v1.0/users/b", "headers": {"Authorization": "x"}},
                ],
            }
        ),
        {"jobId", "operations[0].id", "operations[1].url", "operations[1].headers"},
    ),
    "not-allow-listed": (
        json.dumps({"operations": [{"id": "a", "method": "DELETE", "url": "/applications/123"}]}),
        {"operations[0].url"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_http_job_gets_400_naming_every_bad_field(
    devhost: DevHost, graph: ServedEmulator, case: str
) -> None:
    body, fields = CASES[case]
    response = httpx.post(f"{devhost.base_url}/api/jobs", content=body, headers=devhost.headers, timeout=30)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert {error["field"] for error in problem["errors"]} == fields
    assert "Traceback" not in response.text
    assert graph.emulator.batch_calls() == []


def test_invalid_queue_messages_get_rejected_rows_and_the_poison_queue(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    for body, _ in CASES.values():
        put_message(app_env, body, as_base64=False)

    wait_until(lambda: len(poison_messages(app_env)) == len(CASES), timeout=30)
    wait_until(lambda: len(all_partitions(app_env)) == len(CASES), timeout=10)

    assert sorted(poison_messages(app_env)) == sorted(body for body, _ in CASES.values())
    partitions = all_partitions(app_env)
    for entities in partitions.values():
        job_row = next(e for e in entities if e["RowKey"] == "")
        assert job_row["Status"] == "Rejected"
        assert job_row["Reason"]
        for row in entities:
            if row["RowKey"]:
                assert row["Status"] == "Rejected"
                assert row["ErrorMessage"] == job_row["Reason"]
    # the cycle message named two operations: each has its own Rejected row
    assert any({e["RowKey"] for e in entities} == {"", "a", "b"} for entities in partitions.values())
    assert graph.emulator.batch_calls() == []
    assert "Traceback" not in devhost.log()


def test_a_work_message_on_the_public_queue_is_rejected_and_touches_no_job(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(1)
    victim = {
        "jobId": "victim",
        "operations": [{"id": "a", "method": "PATCH", "url": "/users/user1@contoso.com"}],
    }
    put_message(app_env, json.dumps(victim), as_base64=False)
    wait_until(lambda: rows(app_env, "victim").get("a", {}).get("Status") == "Succeeded", timeout=30)
    forged = {
        "kind": "provisioning.work",
        "jobId": "victim",
        "ticket": "0" * 32,
        "items": [{"operation": {"id": "a", "method": "DELETE", "url": "/users/user1@contoso.com"}}],
    }
    put_message(app_env, json.dumps(forged), as_base64=False)

    wait_until(lambda: len(poison_messages(app_env)) == 1, timeout=30)
    rejected = [rows for key, rows in all_partitions(app_env).items() if key.startswith("rejected-")]
    assert len(rejected) == 1
    assert "internal queue" in rejected[0][0]["Reason"]
    assert rows(app_env, "victim")["a"]["Status"] == "Succeeded"
    assert [i["method"] for c in graph.emulator.batch_calls() for i in c["items"]] == ["PATCH"]


def test_a_hand_written_work_message_cannot_send_an_operation_outside_the_allow_list(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    """Only the app can write its work queue (Bicep grants producers the public queue alone);
    should anything else get a message onto it, the send-time gate still holds."""
    forged = {
        "kind": "provisioning.work",
        "jobId": "forged",
        "ticket": "1" * 32,
        "items": [{"operation": {"id": "x", "method": "DELETE", "url": "/directoryRoles/abc"}}],
    }
    put_message(app_env, json.dumps(forged), as_base64=False, queue_setting="WORK_QUEUE")

    wait_until(lambda: rows(app_env, "forged").get("x", {}).get("Status") == "Failed", timeout=30)

    assert rows(app_env, "forged")["x"]["ErrorCode"] == "operationNotAllowed"
    assert graph.emulator.batch_calls() == []


def test_a_hand_written_work_message_is_checked_at_send_time_like_intake(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(2)
    evil = "https://attacker.example/v1.0/directoryObjects/x"
    forged = {
        "kind": "provisioning.work",
        "jobId": "forged-forms",
        "ticket": "2" * 32,
        "items": [
            {
                "operation": {
                    "id": "header",
                    "method": "PATCH",
                    "url": "/users/user1@contoso.com",
                    "headers": {"Content-Type": "application/json", "Authorization ": "Bearer stolen"},
                    "body": {"jobTitle": "x"},
                }
            },
            {
                "operation": {
                    "id": "ref",
                    "method": "POST",
                    "url": "/groups/g1/members/$ref",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"@odata.id": evil},
                }
            },
            {
                "operation": {
                    "id": "dots",
                    "method": "PATCH",
                    "url": "/users/%2e%2e/groups",
                    "headers": {"Content-Type": "application/json"},
                    "body": {},
                }
            },
        ],
    }
    put_message(app_env, json.dumps(forged), as_base64=False, queue_setting="WORK_QUEUE")

    wait_until(lambda: len(rows(app_env, "forged-forms")) == 3, timeout=30)
    wait_until(
        lambda: all(r["Status"] != "Pending" for r in rows(app_env, "forged-forms").values()), timeout=30
    )
    stored = rows(app_env, "forged-forms")
    assert {r["ErrorCode"] for r in stored.values()} == {"operationNotAllowed"}
    assert graph.emulator.batch_calls() == []
    assert "stolen" not in devhost.log()
    assert all("attacker" not in str(r) and "stolen" not in str(r) for r in stored.values())
