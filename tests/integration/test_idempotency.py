"""Nothing twice: re-posts, redelivered messages, and a host killed while batches are in flight."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from devhost.stack import DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import job, patch_users, poll_job, put_message, queue_length, rows, wait_until


def test_reposting_a_finished_job_returns_its_results_and_sends_nothing(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(3)
    body = job(patch_users(3), "repost")
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        first = client.post(f"{devhost.base_url}/api/jobs", content=body)
        final = poll_job(client, first.headers["Location"])[-1]
        calls = len(graph.emulator.batch_calls())

        again = client.post(f"{devhost.base_url}/api/jobs", content=body)
        changed = client.post(f"{devhost.base_url}/api/jobs", content=job(patch_users(2), "repost"))

    assert again.status_code == 200
    assert again.json()["operations"] == final.json()["operations"]
    assert changed.status_code == 409
    assert changed.json()["errors"][0]["field"] == "jobId"
    assert len(graph.emulator.batch_calls()) == calls == 1


def test_redelivered_message_resends_nothing_already_final(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(20)
    text = job(patch_users(20), "redelivered")
    put_message(app_env, text, as_base64=False)
    wait_until(lambda: len(graph.emulator.batch_calls()) == 1 and queue_length(app_env) == 0, timeout=30)
    put_message(app_env, text, as_base64=True)  # the same message again
    wait_until(lambda: queue_length(app_env) == 0, timeout=30)
    assert len(graph.emulator.batch_calls()) == 1
    assert {r["Status"] for r in rows(app_env, "redelivered").values()} == {"Succeeded"}


def test_user_that_already_exists_counts_as_created_and_its_id_still_resolves(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    existing = graph.emulator.tenant.find_user("user1@contoso.com")
    assert existing is not None
    document = {
        "operations": [
            {
                "id": "user",
                "method": "POST",
                "url": "/users",
                "body": {"userPrincipalName": "user1@contoso.com"},
            },
            {"id": "title", "method": "PATCH", "url": "/users/{{user.id}}", "body": {"jobTitle": "Lead"}},
        ]
    }
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=json.dumps(document))
        result = poll_job(client, accepted.headers["Location"])[-1].json()
    ops = {op["id"]: op for op in result["operations"]}
    assert ops["user"]["status"] == "Succeeded"
    assert ops["user"]["note"] == "already existed"
    assert ops["user"]["body"]["id"] == existing["id"]
    assert ops["title"]["status"] == "Succeeded"
    assert existing["jobTitle"] == "Lead"


def _onboarding(n: int) -> dict[str, Any]:
    return {
        "jobId": f"kill-{n}",
        "operations": [
            {
                "id": "user",
                "method": "POST",
                "url": "/users",
                "body": {"userPrincipalName": f"new{n}@contoso.com", "displayName": f"New {n}"},
            },
            {"id": "title", "method": "PATCH", "url": "/users/{{user.id}}", "body": {"jobTitle": "Hire"}},
            {
                "id": "staff",
                "method": "POST",
                "url": "/groups/staff/members/$ref",
                "body": {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/{{user.id}}"},
            },
        ],
    }


def test_killing_the_host_mid_run_leaves_one_final_row_each_and_nothing_created_twice(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    tenant = graph.emulator.tenant
    tenant.groups["staff"] = {"id": "staff", "displayName": "Staff", "groupTypes": []}
    graph.emulator.configure({"latencyMs": 400})
    jobs = 60
    for n in range(jobs):
        put_message(app_env, json.dumps(_onboarding(n)), as_base64=n % 2 == 0)
    env = {
        **app_env,
        "QUEUE_EXTRA_LEASE_SECONDS": "5",
        "DEVHOST_MESSAGE_LEASE_SECONDS": "5",
        "CLAIM_TIMEOUT_SECONDS": "5",
    }

    first = start_devhost(env, tmp_path / "first.log")
    try:
        wait_until(lambda: len(graph.emulator.batch_calls()) >= 2, timeout=30, interval=0.02)
    finally:
        first.stop(kill=True)  # batches are in flight: Graph acted, nothing recorded yet
    killed_after = len(graph.emulator.batch_calls())

    graph.emulator.configure({"latencyMs": 0})
    second = start_devhost(env, tmp_path / "second.log")
    try:

        def all_final() -> bool:
            found = [rows(app_env, f"kill-{n}") for n in range(jobs)]
            return all(len(r) == 3 and all(x["Status"] != "Pending" for x in r.values()) for r in found)

        wait_until(all_final, timeout=120, interval=0.5)
    finally:
        second.stop()

    statuses = Counter(x["Status"] for n in range(jobs) for x in rows(app_env, f"kill-{n}").values())
    assert statuses == {"Succeeded": 3 * jobs}
    notes = Counter(x.get("Note") for n in range(jobs) for x in rows(app_env, f"kill-{n}").values())
    assert notes["already existed"] >= 1  # Graph acted before the kill; the retry found the work done
    created_users = [key for kind, key in tenant.created if kind == "user"]
    assert len(created_users) == len(set(created_users)) == jobs
    assert len(tenant.members["staff"]) == jobs
    assert killed_after >= 2
    print(f"killed after {killed_after} batch calls; {len(graph.emulator.batch_calls())} in all")
