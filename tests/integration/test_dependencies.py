"""Dependency chains as scripts write them, and what a failed step does to its dependents."""

from __future__ import annotations

import json

import httpx

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import poll_job, queue_length, rows, wait_until


def test_chain_listed_dependent_first_runs_in_order(devhost: DevHost, graph: ServedEmulator) -> None:
    body = {
        "jobId": "chain",
        "requests": [
            {
                "id": 3,
                "method": "POST",
                "url": "/users/new@contoso.com/assignLicense",
                "body": {"addLicenses": [{"skuId": "sku-e3"}], "removeLicenses": []},
                "dependsOn": "2",
            },
            {
                "id": 2,
                "method": "PATCH",
                "url": "/users/new@contoso.com",
                "body": {"usageLocation": "NL"},
                "dependsOn": "1",
            },
            {
                "id": 1,
                "method": "POST",
                "url": "/users",
                "body": {
                    "userPrincipalName": "new@contoso.com",
                    "displayName": "New",
                    "accountEnabled": True,
                },
            },
        ],
    }
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=json.dumps(body))
        assert accepted.status_code == 202, accepted.text
        final = poll_job(client, accepted.headers["Location"])[-1]

    assert final.status_code == 200
    assert [op["status"] for op in final.json()["operations"]] == ["Succeeded"] * 3
    sent = [item["url"] for call in graph.emulator.batch_calls() for item in call["items"]]
    assert sent == ["/users", "/users/new@contoso.com", "/users/new@contoso.com/assignLicense"]


def test_failed_step_skips_its_dependents_without_sending_them(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    body = {
        "jobId": "broken-chain",
        "operations": [
            {
                "id": "license",
                "method": "POST",
                "url": "/users/ghost@contoso.com/assignLicense",
                "dependsOn": "title",
            },
            {"id": "title", "method": "PATCH", "url": "/users/ghost@contoso.com", "body": {"jobTitle": "x"}},
            {
                "id": "manager",
                "method": "PUT",
                "url": "/users/ghost@contoso.com/manager/$ref",
                "body": {"@odata.id": "https://graph.microsoft.com/v1.0/users/boss"},
                "dependsOn": ["license"],
            },
        ],
    }
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=json.dumps(body))
        final = poll_job(client, accepted.headers["Location"])[-1]

    result = {op["id"]: op for op in final.json()["operations"]}
    assert final.json()["status"] == "Failed"
    assert result["title"]["status"] == "Failed"
    assert result["title"]["httpStatus"] == 404
    assert result["license"]["status"] == "Skipped"
    assert "'title'" in result["license"]["error"]["message"]
    assert result["manager"]["status"] == "Skipped"
    assert "'title'" in result["manager"]["error"]["message"]
    sent = [item["url"] for call in graph.emulator.batch_calls() for item in call["items"]]
    assert sent == ["/users/ghost@contoso.com"]
    assert rows(app_env, "broken-chain")["manager"]["Status"] == "Skipped"
    wait_until(lambda: queue_length(app_env) == 0, timeout=10)  # the handler returned
