"""The queue door: messages other systems drop on the provisioning queue."""

from __future__ import annotations

import json

import pytest

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import job, patch_users, put_message, rows, summary, wait_until


def _finished(env: dict[str, str], job_id: str, count: int) -> bool:
    found = rows(env, job_id)
    return len(found) == count and all(r["Status"] != "Pending" for r in found.values())


@pytest.mark.parametrize("as_base64", [False, True], ids=["plain-json", "base64-json"])
def test_queued_45_operation_job_completes_in_3_batches(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str], as_base64: bool
) -> None:
    graph.emulator.tenant.seed_users(45)
    put_message(app_env, job(patch_users(45), "queued-45"), as_base64=as_base64)

    wait_until(lambda: _finished(app_env, "queued-45", 45), timeout=30)
    # the summary row is recounted right after the operation rows are written
    wait_until(lambda: summary(app_env, "queued-45")["Status"] != "Running", timeout=10)

    assert {r["Status"] for r in rows(app_env, "queued-45").values()} == {"Succeeded"}
    assert summary(app_env, "queued-45")["Status"] == "Succeeded"
    assert summary(app_env, "queued-45")["Succeeded"] == 45
    assert sorted(len(c["items"]) for c in graph.emulator.batch_calls()) == [5, 20, 20]


def test_graph_batch_body_is_accepted_unchanged(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(2)
    body = {
        "requests": [
            {
                "id": 1,
                "method": "PATCH",
                "url": "users/user1@contoso.com",
                "body": {"city": "Oslo"},
                "headers": {"Content-Type": "application/json"},
            },
            {"id": 2, "method": "GET", "url": "/users/user2@contoso.com"},
        ],
        "jobId": "batch-body",
    }
    put_message(app_env, json.dumps(body), as_base64=False)
    wait_until(lambda: _finished(app_env, "batch-body", 2), timeout=30)
    stored = rows(app_env, "batch-body")
    assert stored["1"]["Status"] == stored["2"]["Status"] == "Succeeded"
    assert json.loads(stored["2"]["ResponseBody"])["userPrincipalName"] == "user2@contoso.com"
