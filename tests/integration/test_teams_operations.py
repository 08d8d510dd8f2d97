"""`POST /teams` in a general job, on the local stack: Graph answers 202 and makes the team in
the background; the app follows the operation its Location names (in any of the forms Graph may
write it) until the team's id is known, never sending the create again."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import poll_job


@pytest.fixture
def app_env(app_env: dict[str, str]) -> dict[str, str]:
    return {**app_env, "TEAMS_OPERATION_POLL_SECONDS": "1"}


def _run(devhost: DevHost, document: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=json.dumps(document))
        assert accepted.status_code == 202, accepted.text
        final = poll_job(client, accepted.headers["Location"], timeout=90)[-1]
    assert final.status_code == 200, final.text
    result: dict[str, Any] = final.json()
    return result


def _by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["id"]: op for op in result["operations"]}


@pytest.mark.parametrize("form", ["quoted", "absolute", "bare"])
def test_post_teams_in_a_general_job_follows_graphs_operation_to_the_team_id(
    devhost: DevHost, graph: ServedEmulator, form: str
) -> None:
    tenant = graph.emulator.tenant
    tenant.seed_users(1)
    graph.emulator.configure({"teamOperationSeconds": 2, "teamsLocationForm": form})
    result = _run(
        devhost,
        {
            "operations": [
                {
                    "id": "team",
                    "method": "POST",
                    "url": "/teams",
                    "body": {
                        "template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                        "displayName": "Falcon",
                        "members": [
                            {
                                "@odata.type": "#microsoft.graph.aadUserConversationMember",
                                "roles": ["owner"],
                                "user@odata.bind": "https://graph.microsoft.com/v1.0/users('user1@contoso.com')",
                            }
                        ],
                    },
                },
                {
                    "id": "planning",
                    "method": "POST",
                    "url": "/teams/{{team.id}}/channels",
                    "body": {"displayName": "Planning"},
                },
            ]
        },
    )

    assert result["status"] == "Succeeded", result
    ops = _by_id(result)
    team_id = ops["team"]["body"]["id"]
    assert team_id in tenant.teams
    assert ops["team"]["body"]["teamsAsyncOperation"]["status"] == "succeeded"
    assert any(c["displayName"] == "Planning" for c in tenant.channels[team_id])
    items = [i for c in graph.emulator.batch_calls() for i in c["items"]]
    creates = [i for i in items if i["method"] == "POST" and i["url"] == "/teams"]
    reads = [i for i in items if "/operations/" in i["url"]]
    assert len(creates) == 1  # accepted once, then only its operation is read
    assert creates[0]["status"] == 202
    assert len(reads) >= 2  # inProgress at least once, then succeeded


def test_a_team_operation_that_fails_fails_its_operation_with_graphs_error(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    graph.emulator.configure({"teamOperationSeconds": 0, "teamOperationOutcome": "failed"})
    owner = {
        "roles": ["owner"],
        "user@odata.bind": "https://graph.microsoft.com/v1.0/users('user1@contoso.com')",
    }
    result = _run(
        devhost,
        {
            "operations": [
                {
                    "id": "team",
                    "method": "POST",
                    "url": "/teams",
                    "body": {"displayName": "F", "members": [owner]},
                },
                {"id": "general", "method": "GET", "url": "/teams/{{team.id}}/channels"},
            ]
        },
    )
    ops = _by_id(result)
    assert ops["team"]["status"] == "Failed"
    assert ops["team"]["error"]["code"] == "InternalServerError"
    assert ops["general"]["status"] == "Skipped"
    assert result["status"] == "Failed"


def test_an_accepted_team_whose_operation_cannot_be_read_is_outcome_unknown_never_failed_plainly(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    graph.emulator.configure({"itemFaults": [{"urlContains": "/operations/", "status": 403, "times": 1}]})
    owner = {
        "roles": ["owner"],
        "user@odata.bind": "https://graph.microsoft.com/v1.0/users('user1@contoso.com')",
    }
    result = _run(
        devhost,
        {
            "operations": [
                {
                    "id": "team",
                    "method": "POST",
                    "url": "/teams",
                    "body": {"displayName": "F", "members": [owner]},
                }
            ]
        },
    )
    (team,) = result["operations"]
    assert team["status"] == "Failed"
    assert team["error"]["code"] == "outcomeUnknown"
    assert "check the team" in team["error"]["message"]
    creates = [i for c in graph.emulator.batch_calls() for i in c["items"] if i["url"] == "/teams"]
    assert len(creates) == 1
