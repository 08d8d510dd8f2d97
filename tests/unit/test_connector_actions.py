"""The connector's convenience actions: each typed input becomes a general job that intake
accepts, keyed by ids the maker recognises; bad input is refused field by field without its
values; a team action's result carries the ids a flow needs next."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from batching.connector.actions import (
    INPUTS,
    MAX_USERS_PER_CALL,
    ROUTES,
    ActionName,
    NewChannel,
    NewUser,
    UserUpdate,
    action_results,
    build_job,
    graph_root,
    operation_key,
)
from batching.errors import Problem
from batching.idempotency import Create, create_kind, repeatable, safe_to_resend
from batching.intake import Rejection, parse_job
from batching.records import OperationRecord, OperationStatus

GRAPH = "https://graph.microsoft.com/v1.0"
GROUP = "6a1272b5-f6fc-45c4-95fe-fe7c5a676133"
SECRET = "Sup3r-Secret-Value-9431"


def _build(action: ActionName, document: dict[str, Any], graph: str = GRAPH) -> dict[str, Any]:
    built = build_job(action, json.dumps(document).encode(), graph)
    assert isinstance(built, dict), built
    parsed = parse_job(json.dumps(built))
    assert not isinstance(parsed, Rejection), parsed.problems
    return built


def _problems(action: ActionName, document: Any) -> list[Problem]:
    built = build_job(action, json.dumps(document).encode(), GRAPH)
    assert isinstance(built, list), built
    return built


def test_create_users_makes_one_user_create_per_user_keyed_by_its_principal_name() -> None:
    job = _build(
        ActionName.CREATE_USERS,
        {
            "jobId": "onboarding-1",
            "correlationId": "run-7",
            "users": [
                {
                    "userPrincipalName": "ada@contoso.com",
                    "displayName": "Ada",
                    "password": SECRET,
                    "jobTitle": "Engineer",
                    "usageLocation": "nl",
                    "department": "",
                },
                {
                    "userPrincipalName": "grace@contoso.com",
                    "displayName": "Grace",
                    "password": SECRET,
                    "mailNickname": "gh",
                    "forceChangePasswordNextSignIn": False,
                },
            ],
        },
    )
    assert (job["jobId"], job["correlationId"]) == ("onboarding-1", "run-7")
    ada, grace = job["operations"]
    assert (ada["id"], ada["method"], ada["url"]) == ("ada@contoso.com", "POST", "/users")
    assert ada["body"] == {
        "userPrincipalName": "ada@contoso.com",
        "displayName": "Ada",
        "mailNickname": "ada",
        "accountEnabled": True,
        "passwordProfile": {"password": SECRET, "forceChangePasswordNextSignIn": True},
        "jobTitle": "Engineer",
        "usageLocation": "NL",
    }
    assert grace["body"]["mailNickname"] == "gh"
    assert grace["body"]["passwordProfile"]["forceChangePasswordNextSignIn"] is False


def test_update_users_leaves_empty_values_alone_and_clears_on_the_marker() -> None:
    job = _build(
        ActionName.UPDATE_USERS,
        {
            "users": [
                {"user": "ada@contoso.com", "jobTitle": "Lead", "city": "#CLEAR", "department": ""},
                {"user": GROUP, "accountEnabled": False},
            ]
        },
    )
    first, second = job["operations"]
    assert (first["id"], first["method"], first["url"]) == (
        "ada@contoso.com",
        "PATCH",
        "/users/ada@contoso.com",
    )
    assert first["body"] == {"jobTitle": "Lead", "city": None}
    assert (second["url"], second["body"]) == (f"/users/{GROUP}", {"accountEnabled": False})


def test_add_a_user_to_groups_reads_the_user_once_then_references_it_per_group() -> None:
    other = "0040b377-61d8-43db-94f5-81374122dc7e"
    job = _build(ActionName.ADD_USER_TO_GROUPS, {"user": "ada@contoso.com", "groups": [GROUP, other.upper()]})
    lookup, *members = job["operations"]
    assert (lookup["id"], lookup["method"]) == ("user", "GET")
    assert lookup["url"].startswith("/users/ada@contoso.com?$select=id")
    assert [m["id"] for m in members] == [GROUP, other]
    assert members[0]["url"] == f"/groups/{GROUP}/members/$ref"
    assert members[0]["body"] == {"@odata.id": f"{GRAPH}/directoryObjects/{{{{user.id}}}}"}


def test_create_a_team_runs_owners_group_team_and_channels_in_order_each_safe_to_repeat() -> None:
    job = _build(
        ActionName.CREATE_TEAM,
        {
            "displayName": "Project Falcon",
            "description": "Everything about Falcon",
            "owners": ["ada@contoso.com", "grace@contoso.com"],
            "members": ["alan@contoso.com"],
            "channels": [{"displayName": "Planning", "description": "Dates"}, {"displayName": "Design"}],
        },
    )
    operations = job["operations"]
    assert [op["id"] for op in operations] == [
        "owner-1",
        "owner-2",
        "member-1",
        "group",
        "team",
        "membership-1",
        "channel:Planning",
        "channel:Design",
    ]
    group = operations[3]["body"]
    assert (group["groupTypes"], group["mailEnabled"], group["securityEnabled"]) == (["Unified"], True, False)
    assert group["uniqueName"] == group["mailNickname"] == "ProjectFalcon"
    owners = [f"{GRAPH}/users/{{{{owner-{n}.id}}}}" for n in (1, 2)]
    assert group["owners@odata.bind"] == owners == group["members@odata.bind"]
    assert operations[4]["url"] == "/groups/{{group.id}}/team"
    assert operations[5]["url"] == "/groups/{{group.id}}/members/$ref"
    assert operations[5]["body"] == {"@odata.id": f"{GRAPH}/directoryObjects/{{{{member-1.id}}}}"}
    assert operations[6]["url"] == "/teams/{{team.id}}/channels"
    assert operations[6]["body"] == {
        "displayName": "Planning",
        "membershipType": "standard",
        "description": "Dates",
    }

    parsed = parse_job(json.dumps(job))
    assert not isinstance(parsed, Rejection)
    by_id = {op.id: op for op in parsed.operations}
    assert by_id["team"].depends_on == ("group",)
    assert by_id["group"].depends_on == ("owner-1", "owner-2")
    assert set(by_id["membership-1"].depends_on) == {"group", "member-1"}
    # Every create is one Graph never carries out twice: the group goes as the uniqueName upsert.
    group_sent = repeatable(parsed.job_id, by_id["group"])
    assert create_kind(group_sent) is Create.GROUP_UPSERT
    assert all(safe_to_resend(op) for op in parsed.operations)


def test_object_urls_name_the_configured_cloud_or_graph_for_a_stand_in() -> None:
    assert graph_root("https://graph.microsoft.us/v1.0") == "https://graph.microsoft.us/v1.0"
    assert graph_root("http://127.0.0.1:7072/v1.0") == GRAPH
    job = _build(
        ActionName.ADD_USER_TO_GROUPS,
        {"user": "ada@contoso.com", "groups": [GROUP]},
        "https://graph.microsoft.us/v1.0",
    )
    assert job["operations"][1]["body"]["@odata.id"].startswith("https://graph.microsoft.us/v1.0/")


def test_a_key_a_results_row_cannot_hold_is_escaped() -> None:
    assert operation_key("ada#ext@contoso.com") == "ada%23ext@contoso.com"
    assert operation_key("50%/x?\\") == "50%25%2Fx%3F%5C"


@pytest.mark.parametrize(
    ("action", "document", "fields"),
    [
        (ActionName.CREATE_USERS, {"users": []}, {"users"}),
        (
            ActionName.CREATE_USERS,
            {"users": [{"userPrincipalName": SECRET, "displayName": "A", "password": SECRET}]},
            {"users[0].userPrincipalName"},
        ),
        (
            ActionName.CREATE_USERS,
            {
                "users": [
                    {
                        "userPrincipalName": "a@contoso.com",
                        "displayName": "A",
                        "password": SECRET,
                        "usageLocation": "N1",
                    }
                ]
            },
            {"users[0]"},
        ),
        (
            ActionName.CREATE_USERS,
            {
                "users": [
                    {
                        "userPrincipalName": "a@contoso.com",
                        "displayName": "A",
                        "password": SECRET,
                        "usageLocation": SECRET,
                    }
                ]
            },
            {"users[0].usageLocation"},
        ),
        (
            ActionName.CREATE_USERS,
            {
                "users": [
                    {"userPrincipalName": "a@contoso.com", "displayName": "A", "password": SECRET},
                    {"userPrincipalName": "A@Contoso.com", "displayName": "B", "password": SECRET},
                ]
            },
            {"users"},
        ),
        (
            ActionName.CREATE_USERS,
            {
                "users": [
                    {
                        "userPrincipalName": "a@contoso.com",
                        "displayName": "A",
                        "password": SECRET,
                        "nickname": SECRET,
                    }
                ]
            },
            {"users[0].nickname"},
        ),
        (ActionName.UPDATE_USERS, {"users": [{"user": "a@contoso.com"}]}, {"users[0]"}),
        (
            ActionName.UPDATE_USERS,
            {"users": [{"user": "a@contoso.com", "jobTitle": "x" * 200}]},
            {"users[0].jobTitle"},
        ),
        (ActionName.ADD_USER_TO_GROUPS, {"user": "a@contoso.com", "groups": [SECRET]}, {"groups[0]"}),
        (
            ActionName.ADD_USER_TO_GROUPS,
            {"user": "a@contoso.com", "groups": [GROUP, GROUP.upper()]},
            {"groups"},
        ),
        (ActionName.CREATE_TEAM, {"displayName": "Falcon", "owners": []}, {"owners"}),
        (
            ActionName.CREATE_TEAM,
            {"displayName": "Falcon", "owners": ["a@contoso.com"], "visibility": SECRET},
            {"visibility"},
        ),
        (
            ActionName.CREATE_TEAM,
            {
                "displayName": "Falcon",
                "owners": ["a@contoso.com"],
                "channels": [{"displayName": "Q&A " + SECRET}],
            },
            {"channels[0].displayName"},
        ),
        (
            ActionName.CREATE_TEAM,
            {
                "displayName": "Falcon",
                "owners": ["a@contoso.com"],
                "channels": [{"displayName": "Planning"}, {"displayName": "planning"}],
            },
            {"channels"},
        ),
        (ActionName.CREATE_TEAM, {"displayName": "!!!", "owners": ["a@contoso.com"]}, {"body"}),
        (
            ActionName.CREATE_TEAM,
            {"displayName": "Falcon", "owners": ["a@contoso.com"], "jobId": "no spaces"},
            {"jobId"},
        ),
    ],
)
def test_bad_input_names_each_bad_field_and_never_its_value(
    action: ActionName, document: dict[str, Any], fields: set[str]
) -> None:
    problems = _problems(action, document)
    assert {p.field for p in problems} == fields
    assert all(SECRET not in str(p) for p in problems)


def test_at_most_the_per_call_limit_of_users_is_taken() -> None:
    user = {"displayName": "A", "password": SECRET}
    users = [{**user, "userPrincipalName": f"u{n}@contoso.com"} for n in range(MAX_USERS_PER_CALL + 1)]
    assert {p.field for p in _problems(ActionName.CREATE_USERS, {"users": users})} == {"users"}
    assert len(_build(ActionName.CREATE_USERS, {"users": users[:-1]})["operations"]) == MAX_USERS_PER_CALL


def test_input_that_is_not_a_json_object_is_refused() -> None:
    assert build_job(ActionName.CREATE_USERS, b"[1]", GRAPH) == [Problem("body", "must be a JSON object")]
    assert isinstance(build_job(ActionName.CREATE_USERS, b"{", GRAPH), list)


def _record(op_id: str, status: OperationStatus, body: Any) -> OperationRecord:
    return OperationRecord(
        op_id=op_id,
        status=status,
        method="PUT",
        url="/x",
        attempts=1,
        seq=0,
        http_status=201,
        response_body=body,
        response_body_truncated=False,
        error_code=None,
        error_message=None,
        graph_request_id=None,
        updated_at=datetime.now(UTC),
    )


def test_a_team_result_carries_the_group_and_team_ids_once_they_exist() -> None:
    done = [
        _record("group", OperationStatus.SUCCEEDED, {"id": GROUP}),
        _record("team", OperationStatus.SUCCEEDED, {"id": GROUP, "webUrl": "https://teams.microsoft.com/x"}),
    ]
    assert action_results("createTeam", done) == {
        "groupId": GROUP,
        "teamId": GROUP,
        "teamWebUrl": "https://teams.microsoft.com/x",
    }
    failed = [done[0], _record("team", OperationStatus.FAILED, {"error": {"code": "x"}})]
    assert action_results("createTeam", failed) == {"groupId": GROUP, "teamId": None, "teamWebUrl": None}
    assert action_results("createUsers", done) == {}
    assert action_results(None, done) == {}
    assert action_results("somethingElse", done) == {}


# --- the definition makers import ----------------------------------------------------------------

DEFINITION = json.loads(
    (Path(__file__).resolve().parents[2] / "connector" / "apiDefinition.swagger.json").read_text()
)
NESTED_INPUTS: dict[str, type[BaseModel]] = {
    "NewUser": NewUser,
    "UserUpdate": UserUpdate,
    "NewChannel": NewChannel,
}


def _schema(ref: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = DEFINITION["definitions"][ref["$ref"].rsplit("/", 1)[-1]]
    return schema


def _fields(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@pytest.mark.parametrize("action", list(ActionName))
def test_each_action_is_declared_at_its_route_with_its_input_field_for_field(action: ActionName) -> None:
    operation = DEFINITION["paths"][f"/{ROUTES[action]}"]["post"]
    assert set(operation["responses"]) == {"200", "202", "400", "401", "403", "409", "413"}
    assert operation["responses"]["202"]["schema"] == {"$ref": "#/definitions/JobProgress"}
    (body,) = operation["parameters"]
    schema = _schema(body["schema"])
    assert set(schema["properties"]) == _fields(INPUTS[action])
    for name, prop in schema["properties"].items():
        items = prop.get("items", {})
        if "$ref" in items:
            nested = items["$ref"].rsplit("/", 1)[-1]
            assert set(_schema(items)["properties"]) == _fields(NESTED_INPUTS[nested]), name


@pytest.mark.parametrize("action", list(ActionName))
def test_each_action_result_is_modelled_field_for_field_on_what_the_api_returns(action: ActionName) -> None:
    from batching import http_api
    from batching.records import JobSummary
    from batching.service import JobView

    record = _record("group", OperationStatus.SUCCEEDED, {"id": GROUP})
    summary = JobSummary(
        "job-1",
        1,
        None,
        None,
        "http",
        reason="why",
        action=action.value,
        counts={OperationStatus.SUCCEEDED: 1},
    )
    document = http_api._results(JobView(summary, [record]), "https://app/api/jobs/job-1")
    result = _schema(DEFINITION["paths"][f"/{ROUTES[action]}"]["post"]["responses"]["200"]["schema"])
    assert set(document) == set(result["properties"])
    assert set(result["required"]) == set(document) - {"reason"}
    item = _schema(result["properties"]["operations"]["items"])
    assert set(item["properties"]) == set(DEFINITION["definitions"]["OperationResult"]["properties"])


# --- generated input ---------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
FIELD = re.compile(r"[A-Za-z_$@][A-Za-z0-9_]*(?:\[\d+\])*(?:\.[A-Za-z_$@][A-Za-z0-9_]*(?:\[\d+\])*)*")
# Leaves that are the secret, near-valid values, or other JSON; nested a few levels.
_LEAF = st.one_of(
    st.just(SECRET),
    st.just(f"{SECRET}@contoso.com"),
    st.just("ada@contoso.com"),
    st.just(GROUP),
    st.just("Planning"),
    st.just("#clear"),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
_JSON = st.recursive(
    _LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_KEYS = st.sampled_from(
    [
        "users", "user", "groups", "owners", "channels", "displayName", "userPrincipalName", "password",
        "mailNickname", "usageLocation", "jobTitle", "visibility", "jobId", "correlationId", "description",
    ]
)  # fmt: skip
_DOCUMENTS = st.recursive(
    st.dictionaries(_KEYS, _JSON, max_size=5),
    lambda inner: st.dictionaries(_KEYS, st.one_of(inner, st.lists(inner, max_size=3), _JSON), max_size=5),
    max_leaves=12,
)


@FUZZ
@given(action=st.sampled_from(list(ActionName)), document=_DOCUMENTS)
def test_generated_input_becomes_a_job_intake_accepts_or_problems_naming_fields_without_values(
    action: ActionName, document: dict[str, Any]
) -> None:
    built = build_job(action, json.dumps(document).encode(), GRAPH)
    if isinstance(built, dict):
        assert not isinstance(parse_job(json.dumps(built)), Rejection)
        return
    assert built
    for problem in built:
        assert FIELD.fullmatch(problem.field), problem.field
        assert SECRET not in problem.message


_VALID: dict[ActionName, dict[str, Any]] = {
    ActionName.CREATE_USERS: {
        "users": [{"userPrincipalName": "ada@contoso.com", "displayName": "Ada", "password": SECRET}]
    },
    ActionName.UPDATE_USERS: {"users": [{"user": "ada@contoso.com", "jobTitle": "Lead"}]},
    ActionName.ADD_USER_TO_GROUPS: {"user": "ada@contoso.com", "groups": [GROUP]},
    ActionName.CREATE_TEAM: {
        "displayName": "Falcon",
        "owners": ["ada@contoso.com"],
        "channels": [{"displayName": "Planning"}],
    },
}


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON value a mutation may land."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


@FUZZ
@given(data=st.data(), action=st.sampled_from(list(ActionName)), value=_JSON)
def test_a_valid_input_with_one_field_changed_is_taken_or_refused_naming_that_field(
    data: st.DataObject, action: ActionName, value: Any
) -> None:
    document = json.loads(json.dumps(_VALID[action]))
    path = data.draw(st.sampled_from(_paths(document)))
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    built = build_job(action, json.dumps(document).encode(), GRAPH)
    if isinstance(built, dict):
        assert not isinstance(parse_job(json.dumps(built)), Rejection)
        return
    for problem in built:
        assert FIELD.fullmatch(problem.field), problem.field
        assert SECRET not in problem.message
