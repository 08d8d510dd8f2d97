"""Jobs that chain through output references, under Graph's replication lag (issue: chains)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import poll_job


@pytest.fixture
def app_env(app_env: dict[str, str]) -> dict[str, str]:
    return {**app_env, "REPLICATION_RETRY_SECONDS": "1"}


def _run(devhost: DevHost, document: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=json.dumps(document))
        assert accepted.status_code == 202, accepted.text
        final = poll_job(client, accepted.headers["Location"], timeout=90)[-1]
    assert final.status_code == 200
    result: dict[str, Any] = final.json()
    return result


def test_team_with_three_channels_in_one_submission_despite_replication_lag(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.configure({"replicationLagSeconds": 2})
    channels = [
        {
            "id": f"channel{n}",
            "method": "POST",
            "url": "/teams/{{team.id}}/channels",
            "body": {"displayName": name, "membershipType": "standard"},
        }
        for n, name in enumerate(["Planning", "Design", "Release"], start=1)
    ]
    result = _run(
        devhost,
        {
            "jobId": "team-flow",
            "operations": [
                {
                    "id": "group",
                    "method": "POST",
                    "url": "/groups",
                    "body": {
                        "displayName": "Project Falcon",
                        "mailNickname": "falcon",
                        "groupTypes": ["Unified"],
                        "mailEnabled": True,
                        "securityEnabled": False,
                    },
                },
                {
                    "id": "team",
                    "method": "PUT",
                    "url": "/groups/{{group.id}}/team",
                    "body": {"memberSettings": {"allowCreateUpdateChannels": True}},
                },
                *channels,
            ],
        },
    )

    assert result["status"] == "Succeeded", result
    group_id = result["operations"][0]["body"]["id"]
    assert graph.emulator.tenant.teams[group_id]
    names = {c["displayName"] for c in graph.emulator.tenant.channels[group_id]}
    assert names == {"General", "Planning", "Design", "Release"}
    team_sends = [i for c in graph.emulator.batch_calls() for i in c["items"] if i["url"].endswith("/team")]
    assert team_sends[0]["status"] == 404  # Graph had not replicated the new group yet
    assert team_sends[-1]["status"] == 201
    assert all(i["url"] == f"/groups/{group_id}/team" for i in team_sends)


def test_onboarding_flow_by_user_id_in_one_submission(devhost: DevHost, graph: ServedEmulator) -> None:
    graph.emulator.configure({"replicationLagSeconds": 1})
    staff = graph.emulator.tenant.handle(
        "POST", "/groups", {"displayName": "Staff", "mailNickname": "staff", "securityEnabled": True}
    ).body
    graph.emulator.tenant.visible_at[staff["id"]] = 0
    result = _run(
        devhost,
        {
            "jobId": "onboard-grace",
            "correlationId": "hr-4711",
            "operations": [
                {
                    "id": "user",
                    "method": "POST",
                    "url": "/users",
                    "body": {
                        "userPrincipalName": "grace@contoso.com",
                        "displayName": "Grace",
                        "accountEnabled": True,
                        "mailNickname": "grace",
                        "usageLocation": "GB",
                        "passwordProfile": {"password": "S3cret!-x", "forceChangePasswordNextSignIn": True},
                    },
                },
                {
                    "id": "license",
                    "method": "POST",
                    "url": "/users/{{user.id}}/assignLicense",
                    "body": {
                        "addLicenses": [{"skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df"}],
                        "removeLicenses": [],
                    },
                },
                {
                    "id": "group",
                    "method": "POST",
                    "url": f"/groups/{staff['id']}/members/$ref",
                    "body": {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/{{user.id}}"},
                },
                {
                    "id": "welcome",
                    "method": "POST",
                    "url": "/users/{{user.id}}/events",
                    "body": {
                        "subject": "Welcome, {{user.displayName}}!",
                        "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
                        "end": {"dateTime": "2026-12-01T09:30:00", "timeZone": "UTC"},
                    },
                },
                {
                    "id": "calendar",
                    "method": "POST",
                    "url": "/users/{{user.id}}/calendar/calendarPermissions",
                    "body": {"emailAddress": {"address": "manager@contoso.com"}, "role": "read"},
                },
            ],
        },
    )

    assert result["status"] == "Succeeded", result
    assert result["correlationId"] == "hr-4711"
    tenant = graph.emulator.tenant
    user = tenant.find_user("grace@contoso.com")
    assert user is not None
    assert tenant.licenses[user["id"]] == {"c7df2760-2c81-4ef7-b578-5b5392b571df"}
    assert user["id"] in tenant.members[staff["id"]]
    assert tenant.events[user["id"]][0]["subject"] == "Welcome, Grace!"
    assert tenant.calendar_permissions[user["id"]][0]["role"] == "read"


def test_reference_to_a_missing_path_fails_naming_the_reference(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    result = _run(
        devhost,
        {
            "jobId": "bad-ref",
            "operations": [
                {"id": "lookup", "method": "GET", "url": "/users/user1@contoso.com"},
                {
                    "id": "use",
                    "method": "PATCH",
                    "url": "/users/{{lookup.manager.id}}",
                    "body": {"city": "Oslo"},
                },
                {"id": "after", "method": "GET", "url": "/users/{{use.id}}"},
            ],
        },
    )
    ops = {op["id"]: op for op in result["operations"]}
    assert ops["lookup"]["status"] == "Succeeded"
    assert ops["use"]["status"] == "Failed"
    assert "{{lookup.manager.id}}" in ops["use"]["error"]["message"]
    assert ops["after"]["status"] == "Skipped"
