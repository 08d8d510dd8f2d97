"""The connector's convenience actions end to end on the local stack (dev host + Azurite + Graph
emulator), answered as Run provisioning job is (202 + Location, then the results), and
`POST /teams` followed through Graph's async operation to the team's id."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import poll_job

SECRET = "Sup3r-Secret-Value-9431"


@pytest.fixture
def app_env(app_env: dict[str, str]) -> dict[str, str]:
    return {**app_env, "REPLICATION_RETRY_SECONDS": "1", "TEAMS_OPERATION_POLL_SECONDS": "1"}


def _run(devhost: DevHost, route: str, document: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=30, headers=devhost.headers) as client:
        accepted = client.post(f"{devhost.base_url}/api/{route}", content=json.dumps(document))
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["Retry-After"]
        assert accepted.json()["jobId"]
        final = poll_job(client, accepted.headers["Location"], timeout=90)[-1]
    assert final.status_code == 200, final.text
    result: dict[str, Any] = final.json()
    return result


def _by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["id"]: op for op in result["operations"]}


def _user(graph: ServedEmulator, upn: str) -> dict[str, Any]:
    user = graph.emulator.tenant.find_user(upn)
    assert user is not None
    return user


def test_create_users_reports_each_user_by_principal_name_with_its_new_id(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(1)
    users = [
        {
            "userPrincipalName": upn,
            "displayName": upn.split("@")[0],
            "password": SECRET,
            "usageLocation": "NL",
        }
        for upn in ("ada@contoso.com", "grace@contoso.com", "user1@contoso.com")
    ]
    result = _run(devhost, "actions/create-users", {"correlationId": "run-1", "users": users})

    assert result["status"] == "Succeeded"
    assert result["correlationId"] == "run-1"
    assert result["counts"]["succeeded"] == 3
    ops = _by_id(result)
    assert list(ops) == ["ada@contoso.com", "grace@contoso.com", "user1@contoso.com"]
    ada = graph.emulator.tenant.find_user("ada@contoso.com")
    assert ada is not None
    assert ops["ada@contoso.com"]["body"]["id"] == ada["id"]
    assert ops["user1@contoso.com"]["note"] == "already existed"  # read back, not made twice
    assert SECRET not in json.dumps(result)


def test_update_users_changes_what_is_given_and_a_missing_user_fails_alone(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(2)
    _user(graph, "user2@contoso.com")["city"] = "Oslo"
    result = _run(
        devhost,
        "actions/update-users",
        {
            "users": [
                {"user": "user1@contoso.com", "jobTitle": "Engineer", "department": ""},
                {"user": "user2@contoso.com", "city": "#clear"},
                {"user": "nobody@contoso.com", "jobTitle": "Ghost"},
            ]
        },
    )

    assert result["status"] == "PartiallySucceeded"  # the final answer is 200 all the same
    assert (result["counts"]["succeeded"], result["counts"]["failed"]) == (2, 1)
    ops = _by_id(result)
    assert ops["nobody@contoso.com"]["status"] == "Failed"
    assert ops["nobody@contoso.com"]["error"]["code"] == "Request_ResourceNotFound"
    assert _user(graph, "user1@contoso.com")["jobTitle"] == "Engineer"
    assert "department" not in _user(graph, "user1@contoso.com")
    assert _user(graph, "user2@contoso.com")["city"] is None


def test_add_a_user_to_groups_references_the_user_in_each_group(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    tenant = graph.emulator.tenant
    tenant.seed_users(1)
    user = tenant.find_user("user1@contoso.com")
    assert user is not None
    groups = [
        tenant.handle("POST", "/groups", {"displayName": name, "mailNickname": name}).body["id"]
        for name in ("staff", "london")
    ]
    tenant.members[groups[1]] = {user["id"]}
    result = _run(devhost, "actions/add-user-to-groups", {"user": "user1@contoso.com", "groups": groups})

    assert result["status"] == "Succeeded"
    ops = _by_id(result)
    assert list(ops) == ["user", *groups]
    assert ops[groups[1]]["note"] == "already existed"
    assert all(user["id"] in tenant.members[group] for group in groups)


def test_create_a_team_with_channels_in_one_action_despite_replication_lag_and_never_twice(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    tenant = graph.emulator.tenant
    tenant.seed_users(3)
    graph.emulator.configure({"replicationLagSeconds": 2, "teamRequiresOwner": True})
    document = {
        "displayName": "Project Falcon",
        "description": "Everything about Falcon",
        "owners": ["user1@contoso.com", "user2@contoso.com"],
        "members": ["user3@contoso.com"],
        "channels": [{"displayName": "Planning"}, {"displayName": "Design", "description": "Drawings"}],
    }
    result = _run(devhost, "actions/create-team", {**document, "jobId": "falcon-1"})

    assert result["status"] == "Succeeded", result
    group_id = result["groupId"]
    assert result["teamId"] == group_id
    ops = _by_id(result)
    steps = ["owner-1", "owner-2", "member-1", "group", "team", "membership-1"]
    assert list(ops) == [*steps, "channel:Planning", "channel:Design"]
    assert ops["team"]["body"]["id"] == group_id
    owners = {_user(graph, f"user{n}@contoso.com")["id"] for n in (1, 2)}
    assert tenant.owners[group_id] == owners
    assert tenant.members[group_id] == {*owners, _user(graph, "user3@contoso.com")["id"]}
    assert {c["displayName"] for c in tenant.channels[group_id]} == {"General", "Planning", "Design"}
    team_sends = [i for c in graph.emulator.batch_calls() for i in c["items"] if i["url"].endswith("/team")]
    assert team_sends[0]["status"] == 404  # Graph had not replicated the new group yet
    assert team_sends[-1]["status"] == 201

    again = _run(devhost, "actions/create-team", {**document, "jobId": "falcon-2"})
    assert again["status"] == "Succeeded"
    assert again["teamId"] == group_id
    assert {op["id"]: op.get("note") for op in again["operations"]} == {
        "owner-1": None,
        "owner-2": None,
        "member-1": None,
        "group": "already existed",
        "team": "already existed",
        "membership-1": "already existed",
        "channel:Planning": "already existed",
        "channel:Design": "already existed",
    }
    made = [kind for kind, _ in tenant.created]
    assert (made.count("group"), made.count("team"), made.count("channel")) == (1, 1, 2)


def test_action_input_is_refused_field_by_field_without_repeating_it(devhost: DevHost) -> None:
    document = {"displayName": "Falcon", "owners": [SECRET], "channels": [{"displayName": "a/b"}], "x": 1}
    with httpx.Client(timeout=30) as client:
        refused = client.post(
            f"{devhost.base_url}/api/actions/create-team",
            content=json.dumps(document),
            headers=devhost.headers,
        )
        no_key = client.post(f"{devhost.base_url}/api/actions/create-team", content=json.dumps(document))
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in refused.json()["errors"]} == {"owners[0]", "channels[0].displayName", "x"}
    assert SECRET not in refused.text
    assert no_key.status_code == 401
