"""Graph's Teams async operations: the Location forms `POST /teams` may answer with, what a read
of the operation says, and the emulator's `POST /teams` as Graph documents it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from batching.allowlist import find_allowed, path_of, sendable_problems
from batching.classify import Verdict, classify
from batching.graph.async_operations import (
    AsyncOperationStatus,
    TeamsOperation,
    operation_from_headers,
    read_operation,
    team_from_headers,
    team_of,
)
from batching.graph.client import ItemResponse
from batching.models import Operation, WorkItem
from batching.retry import RetryPolicy
from emulator.app import GraphEmulator

TEAM = "dbd8de4f-5d47-48da-87f1-594bed003375"
OPERATION = "3a6fdce1-c261-48bc-89de-1cfef658c0d5"


@pytest.mark.parametrize(
    "location",
    [
        f"/teams('{TEAM}')/operations('{OPERATION}')",  # as Graph's docs show it
        f"/teams({TEAM})/operations({OPERATION})",
        f"https://graph.microsoft.com/v1.0/teams('{TEAM}')/operations('{OPERATION}')",
        f"https://graph.microsoft.us/beta/teams/{TEAM}/operations/{OPERATION}",
        f"/teams/{TEAM}/operations/{OPERATION}",
        f"/v1.0/teams('{TEAM}')/operations('{OPERATION}')/",
    ],
)
def test_every_location_form_names_the_same_operation_and_team(location: str) -> None:
    found = operation_from_headers({"location": location})
    assert found == TeamsOperation(TEAM, OPERATION)
    assert found.status_url == f"/teams/{TEAM}/operations/{OPERATION}"
    assert team_of(found.status_url) == TEAM


def test_the_status_url_is_an_allowed_read_that_can_be_sent() -> None:
    url = TeamsOperation(TEAM, OPERATION).status_url
    allowed = find_allowed("GET", path_of(url))
    assert allowed is not None
    assert allowed.permission == "Group.ReadWrite.All"
    assert sendable_problems("GET", url, {}, None) == []


@pytest.mark.parametrize(
    "location",
    [
        f"https://evil.example/v1.0/teams('{TEAM}')/operations('{OPERATION}')",  # not a Graph host
        f"http://graph.microsoft.com/v1.0/teams('{TEAM}')/operations('{OPERATION}')",  # not https
        f"//graph.microsoft.com/teams('{TEAM}')/operations('{OPERATION}')",
        f"/teams('..')/operations('{OPERATION}')",
        f"/teams('{TEAM}%2F..%2Fusers')/operations('{OPERATION}')",
        f"/groups('{TEAM}')/operations('{OPERATION}')",
        f"/teams('{TEAM}')",
        "",
    ],
)
def test_a_location_that_cannot_be_read_safely_names_no_operation(location: str) -> None:
    assert operation_from_headers({"Location": location}) is None


def test_content_location_names_the_new_team() -> None:
    assert team_from_headers({"Content-Location": f"/teams('{TEAM}')"}) == TEAM
    assert team_from_headers({"content-location": f"https://graph.microsoft.com/v1.0/teams/{TEAM}"}) == TEAM
    assert team_from_headers({}) is None


def test_reading_the_operation_gives_its_status_team_and_error() -> None:
    done = read_operation({"status": "succeeded", "targetResourceId": TEAM, "error": None})
    assert (done.status, done.target_id, done.error_code) == (AsyncOperationStatus.SUCCEEDED, TEAM, None)
    failed = read_operation({"status": "failed", "error": {"code": "Conflict", "message": "name taken"}})
    assert (failed.status, failed.error_code, failed.error_message) == (
        AsyncOperationStatus.FAILED,
        "Conflict",
        "name taken",
    )
    assert read_operation({"status": "notStarted"}).status.running
    assert read_operation({"status": "inProgress"}).status.running
    assert read_operation({"status": "somethingNew"}).status is AsyncOperationStatus.INVALID
    assert read_operation(None).status is AsyncOperationStatus.INVALID


def test_a_202_naming_an_operation_is_followed_and_any_other_2xx_is_done() -> None:
    work = WorkItem(operation=Operation(id="team", method="POST", url="/teams", body={"displayName": "x"}))
    policy = RetryPolicy(max_attempts=8)
    headers = {
        "Location": f"/teams('{TEAM}')/operations('{OPERATION}')",
        "Content-Location": f"/teams('{TEAM}')",
    }
    assert classify(work, ItemResponse(202, headers, None, None), policy) is Verdict.ACCEPTED
    assert classify(work, ItemResponse(202, {}, None, None), policy) is Verdict.SUCCEEDED
    assert classify(work, ItemResponse(201, headers, {"id": TEAM}, None), policy) is Verdict.SUCCEEDED


# --- the emulator ------------------------------------------------------------------------------


async def _call(emulator: GraphEmulator, method: str, url: str, body: Any = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, f"/v1.0{url}", json=body, headers={"Authorization": "Bearer t"})


def _template_team(owner: str = "user1@contoso.com") -> dict[str, Any]:
    return {
        "template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
        "displayName": "Falcon",
        "channels": [{"displayName": "Planning"}],
        "members": [
            {
                "@odata.type": "#microsoft.graph.aadUserConversationMember",
                "roles": ["owner"],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{owner}')",
            }
        ],
    }


async def test_emulator_post_teams_answers_202_and_the_operation_runs_for_the_configured_while() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    emulator.configure({"teamOperationSeconds": 3600})
    accepted = await _call(emulator, "POST", "/teams", _template_team())
    assert accepted.status_code == 202
    assert accepted.content == b""
    operation = operation_from_headers(accepted.headers)
    assert operation is not None
    assert team_from_headers(accepted.headers) == operation.team_id
    running = await _call(emulator, "GET", operation.status_url)
    assert running.json()["status"] == "inProgress"
    assert (await _call(emulator, "GET", f"/teams/{operation.team_id}")).status_code == 404
    for running_operation in emulator.tenant.team_operations.values():  # its hour is up
        running_operation["ready_at"] = 0.0
    done = (await _call(emulator, "GET", operation.status_url)).json()
    assert (done["status"], done["targetResourceId"]) == ("succeeded", operation.team_id)
    assert (await _call(emulator, "GET", f"/teams/{operation.team_id}")).status_code == 200
    channels = (await _call(emulator, "GET", f"/teams/{operation.team_id}/channels")).json()["value"]
    assert {c["displayName"] for c in channels} == {"General", "Planning"}


async def test_emulator_template_team_needs_an_owner_with_application_permissions() -> None:
    emulator = GraphEmulator()
    body = {k: v for k, v in _template_team().items() if k != "members"}
    assert (await _call(emulator, "POST", "/teams", body)).status_code == 400


@pytest.mark.parametrize("form", ["quoted", "bare", "absolute", "segments"])
async def test_emulator_writes_the_location_in_the_form_configured(form: str) -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    emulator.configure({"teamsLocationForm": form})
    accepted = await _call(emulator, "POST", "/teams", _template_team())
    assert operation_from_headers(accepted.headers) is not None
    assert ("'" in accepted.headers["Location"]) == (form in {"quoted", "absolute"})


async def test_emulator_group_create_binds_owners_and_members_and_a_repeat_upsert_says_they_exist() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    user = emulator.tenant.find_user("user1@contoso.com")
    assert user is not None
    bind = [f"https://graph.microsoft.com/v1.0/users/{user['id']}"]
    body = {
        "displayName": "Falcon",
        "mailNickname": "falcon",
        "groupTypes": ["Unified"],
        "owners@odata.bind": bind,
        "members@odata.bind": bind,
    }
    headers = {"Prefer": "create-if-missing"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        url = "/v1.0/groups(uniqueName='falcon')"
        first = await client.patch(url, json=body, headers={**headers, "Authorization": "Bearer t"})
        again = await client.patch(url, json=body, headers={**headers, "Authorization": "Bearer t"})
    assert first.status_code == 201
    group = first.json()
    assert "owners@odata.bind" not in group
    assert emulator.tenant.owners[group["id"]] == {user["id"]} == emulator.tenant.members[group["id"]]
    assert again.status_code == 400
    assert "already exist" in again.json()["error"]["message"]
    missing = {**body, "owners@odata.bind": ["https://graph.microsoft.com/v1.0/users/nobody"]}
    assert (await _call(emulator, "POST", "/groups", missing)).status_code == 400


async def test_emulator_refuses_a_team_on_a_group_without_owners_when_asked_to() -> None:
    emulator = GraphEmulator()
    emulator.tenant.groups["g1"] = {"id": "g1", "displayName": "Staff", "groupTypes": ["Unified"]}
    emulator.configure({"teamRequiresOwner": True})
    assert (await _call(emulator, "PUT", "/groups/g1/team", {})).status_code == 400
    bound = {"group@odata.bind": "https://graph.microsoft.com/v1.0/groups('g1')"}
    assert (await _call(emulator, "POST", "/teams", bound)).status_code == 400
    emulator.tenant.owners["g1"] = {"someone"}
    assert (await _call(emulator, "PUT", "/groups/g1/team", {})).status_code == 201
