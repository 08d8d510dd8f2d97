"""The postprovision hook that grants the identity its Graph permissions, against a fake Graph."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from batching.allowlist import required_permissions
from infra.hooks.grant_graph_permissions import (
    EXIT_INVALID,
    EXIT_NOT_GRANTED,
    EXIT_OK,
    GRAPH_APP_ID,
    Patience,
    main,
)

GRAPH_SP = "9a0e3b71-0000-4000-8000-000000000001"
IDENTITY = "5c1f2a33-1111-4111-8111-111111111111"
OTHER_RESOURCE = "7e7e7e7e-2222-4222-8222-222222222222"
NEEDED = sorted(required_permissions())
ROLE_IDS = {
    name: f"00000000-0000-4000-8000-{index:012d}" for index, name in enumerate([*NEEDED, "Mail.Send"])
}
ENV = {
    "IDENTITY_PRINCIPAL_ID": IDENTITY,
    "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0",
    "AZURE_RESOURCE_GROUP": "rg-prod",
}
MANAGED_IDENTITY = {
    "id": IDENTITY,
    "servicePrincipalType": "ManagedIdentity",
    "alternativeNames": [
        "isExplicit=True",
        "/subscriptions/0000/resourcegroups/rg-prod/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-x",
    ],
}
PATIENCE = Patience(first_wait_seconds=5, max_wait_seconds=60, total_seconds=300)


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class FakeGraph:
    """Just enough of Graph's service principal API; every answer can be scripted per route."""

    def __init__(self, *, held: set[str] | None = None) -> None:
        self.held: set[str] = set(held or ())
        self.identity_answers: list[httpx.Response] = []
        self.grant_answers: list[httpx.Response] = []
        self.next_link: str | None = None
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == "graph.microsoft.com"
        assert request.headers["Authorization"] == "Bearer fake-token"
        path = request.url.path
        if request.method == "GET" and path == f"/v1.0/servicePrincipals(appId='{GRAPH_APP_ID}')":
            roles = [
                {"id": role_id, "value": name, "allowedMemberTypes": ["Application"], "isEnabled": True}
                for name, role_id in ROLE_IDS.items()
            ]
            return httpx.Response(200, json={"id": GRAPH_SP, "appRoles": roles})
        if request.method == "GET" and path == f"/v1.0/servicePrincipals/{IDENTITY}":
            if self.identity_answers:
                return self.identity_answers.pop(0)
            return httpx.Response(200, json=MANAGED_IDENTITY)
        if request.method == "GET" and path == f"/v1.0/servicePrincipals/{IDENTITY}/appRoleAssignments":
            value = [{"appRoleId": ROLE_IDS[name], "resourceId": GRAPH_SP} for name in sorted(self.held)]
            value.append({"appRoleId": ROLE_IDS[NEEDED[0]], "resourceId": OTHER_RESOURCE})
            body: dict[str, Any] = {"value": value}
            if self.next_link:
                body["@odata.nextLink"] = self.next_link
            return httpx.Response(200, json=body)
        if request.method == "POST" and path == f"/v1.0/servicePrincipals/{GRAPH_SP}/appRoleAssignedTo":
            if self.grant_answers:
                return self.grant_answers.pop(0)
            grant = json.loads(request.content)
            assert grant["principalId"] == IDENTITY
            assert grant["resourceId"] == GRAPH_SP
            self.held.add(next(name for name, role_id in ROLE_IDS.items() if role_id == grant["appRoleId"]))
            return httpx.Response(201, json={"id": "assignment", **grant})
        return _error(404, "Request_ResourceNotFound", f"no route {request.method} {path}")

    def posted_roles(self) -> list[str]:
        by_id = {role_id: name for name, role_id in ROLE_IDS.items()}
        return [by_id[json.loads(r.content)["appRoleId"]] for r in self.requests if r.method == "POST"]


class FakeCredential:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken("fake-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def _run(
    graph: FakeGraph, env: dict[str, str] | None = None, credential: FakeCredential | None = None
) -> tuple[int, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    code = main(
        env if env is not None else ENV,
        credential=credential or FakeCredential(),
        transport=httpx.MockTransport(graph.handler),
        sleep=sleep,
        patience=PATIENCE,
    )
    return code, waits


def _no_requests(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing may be sent, but {request.method} {request.url} was")


def test_a_new_identity_gets_exactly_the_permissions_the_allow_list_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = FakeGraph()
    code, waits = _run(graph)
    assert code == EXIT_OK
    assert sorted(graph.posted_roles()) == NEEDED
    assert graph.held == set(NEEDED)
    assert waits == []
    out = capsys.readouterr().out
    for name in NEEDED:
        assert f"granted       {name}" in out


def test_grants_already_held_are_left_alone_and_nothing_is_posted(capsys: pytest.CaptureFixture[str]) -> None:
    graph = FakeGraph(held={*NEEDED, "Mail.Send"})
    code, _ = _run(graph)
    assert code == EXIT_OK
    assert graph.posted_roles() == []
    assert {r.method for r in graph.requests} == {"GET"}
    out = capsys.readouterr().out
    assert "left alone    Mail.Send" in out
    assert all(f"already held  {name}" in out for name in NEEDED)


def test_only_the_missing_grants_are_posted() -> None:
    graph = FakeGraph(held=set(NEEDED[:2]))
    code, _ = _run(graph)
    assert code == EXIT_OK
    assert sorted(graph.posted_roles()) == NEEDED[2:]


def test_a_grant_on_another_resource_does_not_count_as_held() -> None:
    graph = FakeGraph()  # the fake always holds NEEDED[0] on another API's service principal
    _run(graph)
    assert NEEDED[0] in graph.posted_roles()


def test_a_new_identity_is_waited_for_while_it_replicates() -> None:
    graph = FakeGraph()
    graph.identity_answers = [_error(404, "Request_ResourceNotFound", "does not exist")] * 2
    graph.grant_answers = [
        _error(400, "Request_BadRequest", "Not a valid reference update."),
        _error(404, "Request_ResourceNotFound", f"Resource '{IDENTITY}' does not exist."),
    ]
    code, waits = _run(graph)
    assert code == EXIT_OK
    assert graph.held == set(NEEDED)
    assert waits == [5, 10, 5, 10]  # backoff per request, from the first wait again for each
    assert sum(waits) <= PATIENCE.total_seconds


def test_replication_that_outlasts_the_bound_ends_with_the_manual_route(
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = FakeGraph()
    graph.grant_answers = [_error(400, "Request_BadRequest", "Not a valid reference update.")] * 100
    code, waits = _run(graph)
    assert code == EXIT_NOT_GRANTED
    assert waits == [5, 10, 20, 40, 60, 60, 60]  # 255 s; one more would pass the 300 s bound
    err = capsys.readouterr().err
    assert "Not a valid reference update" in err
    assert "Granting the Graph permissions by hand" in err
    assert "GRANT_GRAPH_PERMISSIONS false" in err


def test_a_deployer_who_may_not_grant_gets_the_manual_route_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = FakeGraph()
    graph.grant_answers = [_error(403, "Authorization_RequestDenied", "Insufficient privileges.")]
    code, waits = _run(graph)
    assert code == EXIT_NOT_GRANTED
    assert waits == []
    assert len(graph.posted_roles()) == 1  # stopped at the first refusal
    captured = capsys.readouterr()
    assert "Privileged Role Administrator" in captured.err
    assert "Granting the Graph permissions by hand" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "fake-token" not in captured.err + captured.out


def test_a_token_graph_does_not_accept_asks_for_a_new_sign_in(capsys: pytest.CaptureFixture[str]) -> None:
    graph = FakeGraph()
    graph.identity_answers = [_error(401, "InvalidAuthenticationToken", "Access token has expired.")]
    code, waits = _run(graph)
    assert code == EXIT_NOT_GRANTED
    assert waits == []
    assert "azd auth login" in capsys.readouterr().err


@pytest.mark.parametrize(
    "principal",
    [
        {"id": IDENTITY, "servicePrincipalType": "Application", "alternativeNames": []},
        {
            **MANAGED_IDENTITY,
            "alternativeNames": [str(MANAGED_IDENTITY["alternativeNames"][1]).replace("rg-prod", "rg-other")],
        },
    ],
)
def test_permissions_go_to_the_apps_own_managed_identity_only(
    principal: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    graph = FakeGraph()
    graph.identity_answers = [httpx.Response(200, json=principal)]
    code, _ = _run(graph)
    assert code == EXIT_INVALID
    assert graph.posted_roles() == []
    assert "the app's own identity only" in capsys.readouterr().err


def test_an_answer_not_shaped_as_graph_documents_ends_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    graph = FakeGraph()
    graph.identity_answers = [httpx.Response(200, text="<html>proxy login</html>")]
    code, _ = _run(graph)
    assert code == EXIT_NOT_GRANTED
    captured = capsys.readouterr()
    assert "unexpected form" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_a_grant_that_raced_in_counts_as_held(capsys: pytest.CaptureFixture[str]) -> None:
    graph = FakeGraph(held=set(NEEDED[1:]))
    graph.grant_answers = [
        _error(400, "Request_BadRequest", "Permission being assigned already exists on the object")
    ]
    code, waits = _run(graph)
    assert code == EXIT_OK
    assert waits == []
    assert f"already held  {NEEDED[0]}" in capsys.readouterr().out


def test_throttling_is_waited_out_as_graph_asks() -> None:
    graph = FakeGraph()
    graph.grant_answers = [httpx.Response(429, headers={"Retry-After": "7"})]
    code, waits = _run(graph)
    assert code == EXIT_OK
    assert waits == [7]


def test_switched_off_it_sends_nothing_and_names_what_to_grant(capsys: pytest.CaptureFixture[str]) -> None:
    code = main({**ENV, "GRANT_GRAPH_PERMISSIONS": "false"}, transport=httpx.MockTransport(_no_requests))
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert all(name in out for name in NEEDED)
    assert "Granting the Graph permissions by hand" in out


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"IDENTITY_PRINCIPAL_ID": "../users"},
        {**ENV, "GRAPH_BASE_URL": "https://graph.example.com/v1.0"},
        {**ENV, "GRAPH_BASE_URL": "http://graph.microsoft.com/v1.0"},
        {**ENV, "GRANT_GRAPH_PERMISSIONS": "maybe"},
    ],
)
def test_bad_settings_are_refused_before_anything_is_sent(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(env, credential=FakeCredential(), transport=httpx.MockTransport(_no_requests))
    assert code == EXIT_INVALID
    assert "Traceback" not in capsys.readouterr().err


def test_the_token_is_never_sent_to_another_host(capsys: pytest.CaptureFixture[str]) -> None:
    graph = FakeGraph()
    graph.next_link = "https://collector.example.com/v1.0/servicePrincipals?page=2"
    code, _ = _run(graph)
    assert code == EXIT_NOT_GRANTED
    assert all(r.url.host == "graph.microsoft.com" for r in graph.requests)
    assert "collector.example.com" in capsys.readouterr().err


@pytest.mark.parametrize(
    "credential_error",
    [ClientAuthenticationError("Please run 'azd auth login'"), ClientAuthenticationError("expired")],
)
def test_a_deployer_who_is_not_signed_in_is_told_how_to_sign_in(
    credential_error: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(FakeGraph(), credential=FakeCredential(credential_error))
    assert code == EXIT_NOT_GRANTED
    assert "azd auth login" in capsys.readouterr().err


def test_the_token_is_asked_for_graph_only() -> None:
    credential = FakeCredential()
    _run(FakeGraph(), credential=credential)
    assert set(credential.scopes) == {("https://graph.microsoft.com/.default",)}
