"""Creates made safe to send again (`batching.idempotency`), the answers that mean "already
done" (`batching.classify`), and both against the emulator's Graph."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from batching.allowlist import find_allowed, path_of, sendable_problems
from batching.classify import Verdict, classify
from batching.graph.auth import EmulatorCredential, GraphTokenAuth
from batching.graph.client import BatchRequestItem, GraphBatchClient, ItemResponse, build_http_client
from batching.idempotency import (
    Create,
    create_kind,
    existing_lookup,
    found_object,
    group_url,
    repeatable,
    safe_to_resend,
    transaction_id,
)
from batching.models import Operation, OperationSpec, WorkItem
from batching.retry import RetryPolicy
from emulator.app import GraphEmulator

POLICY = RetryPolicy(max_attempts=5)
JSON = {"Content-Type": "application/json"}
GROUP = {
    "displayName": "Project Falcon",
    "mailNickname": "falcon",
    "groupTypes": ["Unified"],
    "mailEnabled": True,
    "securityEnabled": False,
}


def _op(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, op_id: str = "op"
) -> Operation:
    spec = OperationSpec.model_validate(
        {"id": op_id, "method": method, "url": url, "body": body, "headers": headers or {}}
    )
    return Operation.from_spec(spec)


def _answer(status: int, body: Any = None) -> ItemResponse:
    return ItemResponse(status, {}, body, None)


def _error(status: int, code: str, message: str, **extra: Any) -> ItemResponse:
    return _answer(status, {"error": {"code": code, "message": message, **extra}})


def _sendable(operation: Operation) -> bool:
    return not sendable_problems(operation.method, operation.url, operation.headers, operation.body)


# --- repeatable: groups ---------------------------------------------------------------------------


def test_a_group_with_a_unique_name_is_sent_as_graphs_upsert() -> None:
    create = _op("POST", "/groups", {**GROUP, "uniqueName": "falcon"})
    sent = repeatable("job-1", create)
    assert sent.method == "PATCH"
    assert sent.url == "/groups(uniqueName='falcon')"
    assert sent.headers == {"Content-Type": "application/json", "Prefer": "create-if-missing"}
    assert sent.body == GROUP  # the key is in the URL
    assert (sent.id, sent.depends_on) == (create.id, create.depends_on)
    assert create_kind(sent) is Create.GROUP_UPSERT
    assert _sendable(sent)
    assert repeatable("job-1", sent) == sent  # idempotent


@pytest.mark.parametrize(
    ("unique_name", "url"),
    [
        ("O'Brien", "/groups(uniqueName='O''Brien')"),
        ("team #1 & co?", "/groups(uniqueName='team%20%231%20&%20co%3F')"),
        ("jörg", "/groups(uniqueName='j%C3%B6rg')"),
        ("''", "/groups(uniqueName='''''')"),
    ],
)
def test_the_unique_name_is_an_odata_literal_then_one_encoded_path_segment(
    unique_name: str, url: str
) -> None:
    sent = repeatable("job-1", _op("POST", "/groups", {**GROUP, "uniqueName": unique_name}))
    assert sent.url == url == group_url(unique_name)
    assert _sendable(sent)
    assert _sendable(sent.model_copy(update={"method": "GET", "headers": {}, "body": None}))


@pytest.mark.parametrize("unique_name", ["a/b", "50%", "back\\slash", "", 5, None, "tab\there"])
def test_a_group_without_a_usable_unique_name_is_left_alone_and_is_not_safe_to_resend(
    unique_name: Any,
) -> None:
    body: dict[str, Any] = {**GROUP, "uniqueName": unique_name}
    create = Operation(id="g", method="POST", url="/groups", headers=dict(JSON), body=body)
    assert repeatable("job-1", create) is create
    assert not safe_to_resend(create)
    plain = _op("POST", "/groups", GROUP)
    assert repeatable("job-1", plain) is plain
    assert not safe_to_resend(plain)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({"Prefer": "return=representation"}, {"Prefer": "return=representation, create-if-missing"}),
        ({"prefer": "Create-If-Missing"}, {"prefer": "Create-If-Missing"}),
        ({"Prefer": "return=minimal; create-if-missing"}, {"Prefer": "return=minimal; create-if-missing"}),
    ],
)
def test_create_if_missing_joins_the_makers_own_preferences(
    given: dict[str, str], sent: dict[str, str]
) -> None:
    result = repeatable("j", _op("POST", "/groups", {**GROUP, "uniqueName": "x"}, given))
    assert result.headers == {**sent, "Content-Type": "application/json"}
    assert _sendable(result)


def test_a_patch_by_unique_name_without_create_if_missing_is_an_update() -> None:
    update = _op("PATCH", "/groups(uniqueName='falcon')", {"description": "x"})
    assert find_allowed("PATCH", update.url) is not None
    assert create_kind(update) is None
    assert classify(WorkItem(operation=update), _answer(204), POLICY) is Verdict.SUCCEEDED


def test_the_unique_name_path_admits_only_a_well_formed_literal() -> None:
    assert find_allowed("GET", "/groups(uniqueName='a''b')") is not None
    assert find_allowed("GET", "/GROUPS(UNIQUENAME='a')") is not None
    for bad in [
        "/groups(uniqueName='a'b')",  # a lone quote ends the literal early
        "/groups(uniqueName='a') or (uniqueName='b')",
        "/groups(uniqueName='')",
        "/groups(uniqueName=a)",
        "/groups(displayName='a')",
        "/groups(uniqueName='a')/members",
        "/users(uniqueName='a')",
    ]:
        assert find_allowed("GET", bad) is None, bad
        assert find_allowed("PATCH", bad) is None, bad
    assert find_allowed("DELETE", "/groups(uniqueName='a')") is None


# --- repeatable: events and the rest ----------------------------------------------------------------


@pytest.mark.parametrize("url", ["/users/ada@contoso.com/events", "/groups/g1/events"])
def test_an_event_gets_a_transaction_id_from_its_job_and_operation(url: str) -> None:
    event = _op("POST", url, {"subject": "Kick-off"}, op_id="kickoff")
    sent = repeatable("job-1", event)
    assert isinstance(sent.body, dict)
    assert sent.body == {"subject": "Kick-off", "transactionId": transaction_id("job-1", "kickoff")}
    assert repeatable("job-1", event) == sent  # the same on every send
    assert repeatable("job-1", sent) == sent
    assert repeatable("job-2", event) != sent
    assert repeatable("job-1", event.model_copy(update={"id": "other"})) != sent
    assert (sent.method, sent.url, sent.headers) == (event.method, event.url, event.headers)
    assert safe_to_resend(event)
    assert safe_to_resend(sent)


def test_the_makers_own_transaction_id_is_kept() -> None:
    event = _op("POST", "/users/a/events", {"subject": "x", "transactionId": "mine"})
    assert repeatable("job-1", event) is event


def test_transaction_ids_do_not_collide_across_job_and_operation_boundaries() -> None:
    assert transaction_id("a-b", "c") != transaction_id("a", "b-c")
    assert len(transaction_id("j", "o")) == 36


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/users", {"userPrincipalName": "ada@contoso.com"}),
        ("POST", "/teams/t1/channels", {"displayName": "Planning"}),
        ("PUT", "/groups/g1/team", {}),
        ("PATCH", "/users/ada@contoso.com", {"jobTitle": "x"}),
        (
            "POST",
            "/groups/g1/members/$ref",
            {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"},
        ),
        ("GET", "/users", None),
    ],
)
def test_other_operations_are_sent_as_written(method: str, url: str, body: Any) -> None:
    operation = _op(method, url, body)
    assert repeatable("job-1", operation) is operation


# --- safe_to_resend -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "safe"),
    [
        ("POST", "/users", {"userPrincipalName": "ada@contoso.com"}, True),
        ("POST", "/groups", {**GROUP, "uniqueName": "falcon"}, True),
        ("POST", "/groups", {**GROUP, "uniqueName": "{{names.unique}}"}, True),
        ("POST", "/groups", GROUP, False),
        ("PATCH", "/groups(uniqueName='falcon')", GROUP, True),
        ("POST", "/users/a/events", {"subject": "x"}, True),
        ("POST", "/groups/g/events", {"subject": "x", "transactionId": "t"}, True),
        ("POST", "/users/a/events", {"subject": "x", "transactionId": 5}, False),
        ("POST", "/teams/t/channels", {"displayName": "Planning"}, True),
        ("PUT", "/groups/g/team", {}, True),
        ("POST", "/teams", {"group@odata.bind": "https://graph.microsoft.com/v1.0/groups/g1"}, True),
        ("POST", "/teams", {"displayName": "x", "visibility": "private"}, False),
        (
            "POST",
            "/groups/g/members/$ref",
            {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u"},
            True,
        ),
        (
            "POST",
            "/groups/g/owners/$ref",
            {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u"},
            True,
        ),
        ("POST", "/users/a/calendar/calendarPermissions", {"role": "read"}, False),
        ("POST", "/users/a/assignLicense", {"addLicenses": [], "removeLicenses": []}, True),
        ("PATCH", "/users/a", {"jobTitle": "x"}, True),
        ("DELETE", "/users/a", None, True),
        ("GET", "/users/a", None, True),
    ],
)
def test_which_operations_may_be_sent_again(method: str, url: str, body: Any, safe: bool) -> None:
    operation = _op(method, url, body)
    assert safe_to_resend(operation) is safe
    assert safe_to_resend(repeatable("job", operation)) is safe


def test_an_operation_off_the_allow_list_is_never_safe_to_resend() -> None:
    assert not safe_to_resend(Operation(id="x", method="POST", url="/applications", body={}))


# --- classify: already done ---------------------------------------------------------------------


def _verdict(operation: Operation, answer: ItemResponse) -> Verdict:
    return classify(WorkItem(operation=operation), answer, POLICY)


UPSERT = repeatable("job", _op("POST", "/groups", {**GROUP, "uniqueName": "falcon"}))
CHANNEL = _op("POST", "/teams/t1/channels", {"displayName": "Planning"})
TEAM = _op("PUT", "/groups/g1/team", {})
EVENT = repeatable("job", _op("POST", "/users/ada@contoso.com/events", {"subject": "x"}))
USER = _op("POST", "/users", {"userPrincipalName": "ada@contoso.com"})


@pytest.mark.parametrize(
    ("operation", "answer", "verdict"),
    [
        (UPSERT, _answer(201, {"id": "g1", **GROUP}), Verdict.SUCCEEDED),
        (UPSERT, _answer(204), Verdict.EXISTS),
        (UPSERT, _answer(200, {"@odata.context": "x"}), Verdict.EXISTS),
        (
            UPSERT,
            _error(
                400,
                "Request_BadRequest",
                "One or more added object references already exist for the following modified "
                "properties: 'owners'.",
            ),
            Verdict.EXISTS,
        ),
        (UPSERT, _error(404, "Request_ResourceNotFound", "no such group"), Verdict.FAILED),
        (
            CHANNEL,
            _error(400, "BadRequest", "Channel name already existed, please use other name."),
            Verdict.EXISTS,
        ),
        (
            CHANNEL,
            _error(400, "BadRequest", "Channel DisplayName already exists, please use another name."),
            Verdict.EXISTS,
        ),
        (CHANNEL, _error(409, "NameAlreadyExists", "taken"), Verdict.EXISTS),
        (CHANNEL, _error(400, "BadRequest", "displayName is too long"), Verdict.FAILED),
        (TEAM, _error(409, "Conflict", "Team already exists"), Verdict.EXISTS),
        (TEAM, _error(400, "BadRequest", "Group must be a Microsoft 365 group"), Verdict.FAILED),
        (EVENT, _error(400, "ErrorDuplicateTransactionId", "already used"), Verdict.EXISTS),
        (EVENT, _error(400, "ErrorInvalidRequest", "bad"), Verdict.FAILED),
        (USER, _error(400, "Request_BadRequest", "x", details=[{"code": "ObjectConflict"}]), Verdict.EXISTS),
    ],
)
def test_answers_that_mean_done_before(operation: Operation, answer: ItemResponse, verdict: Verdict) -> None:
    assert _verdict(operation, answer) is verdict


def test_the_verdict_is_on_the_operation_as_sent() -> None:
    stored = _op("POST", "/groups", {**GROUP, "uniqueName": "falcon"})
    work = WorkItem(operation=stored)
    assert classify(work, _answer(204), POLICY) is Verdict.SUCCEEDED  # as a POST it means nothing
    assert classify(work, _answer(204), POLICY, sent=repeatable("job", stored)) is Verdict.EXISTS


# --- existing_lookup and found_object ----------------------------------------------------------------


def _gets(url: str | None) -> str:
    assert url is not None
    assert sendable_problems("GET", url, {}, None) == [], url
    return url


def test_lookups_read_the_object_by_its_natural_key() -> None:
    conflict = _error(400, "Request_BadRequest", "exists")
    assert _gets(existing_lookup(USER, conflict)) == "/users/ada@contoso.com"
    assert _gets(existing_lookup(UPSERT, _answer(204))) == "/groups(uniqueName='falcon')"
    assert _gets(existing_lookup(TEAM, _error(409, "Conflict", "x"))) == "/teams/g1"
    bound = _op("POST", "/teams", {"group@odata.bind": "https://graph.microsoft.com/v1.0/groups/g%201"})
    assert _gets(existing_lookup(bound, _error(409, "Conflict", "x"))) == "/teams/g%201"
    assert (
        _gets(existing_lookup(CHANNEL, conflict))
        == "/teams/t1/channels?$filter=displayName%20eq%20'Planning'"
    )


def test_a_channel_name_is_quoted_as_an_odata_literal_and_fully_encoded() -> None:
    channel = _op("POST", "/teams/t1/channels", {"displayName": "O'Brien & Co #1 ü"})
    url = _gets(existing_lookup(channel, _error(400, "BadRequest", "already existed")))
    assert url == "/teams/t1/channels?$filter=displayName%20eq%20'O%27%27Brien%20%26%20Co%20%231%20%C3%BC'"
    assert find_allowed("GET", path_of(url)) is not None


def test_an_event_is_read_back_only_when_graph_names_it() -> None:
    named = _error(400, "ErrorDuplicateTransactionId", "used", **{"@event.existingEventId": "AAMk=="})
    assert _gets(existing_lookup(EVENT, named)) == "/users/ada@contoso.com/events/AAMk=="
    group_event = repeatable("job", _op("POST", "/groups/g1/events", {"subject": "x"}))
    assert _gets(existing_lookup(group_event, named)) == "/groups/g1/events/AAMk=="
    assert existing_lookup(EVENT, _error(400, "ErrorDuplicateTransactionId", "used")) is None


def test_nothing_is_looked_up_that_cannot_be_read() -> None:
    assert existing_lookup(_op("POST", "/users", {"displayName": "no upn"}), _answer(400)) is None
    assert existing_lookup(_op("POST", "/teams/t/channels", {"description": "x"}), _answer(400)) is None
    member = _op(
        "POST", "/groups/g/members/$ref", {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u"}
    )
    assert existing_lookup(member, _answer(400)) is None
    assert existing_lookup(_op("POST", "/groups", GROUP), _answer(400)) is None


def test_found_object_is_the_object_read_back() -> None:
    assert found_object(USER, _answer(200, {"id": "u1", "userPrincipalName": "ada@contoso.com"})) == {
        "id": "u1",
        "userPrincipalName": "ada@contoso.com",
    }
    assert found_object(USER, _error(404, "Request_ResourceNotFound", "gone")) is None
    assert found_object(UPSERT, _answer(200, {"displayName": "no id"})) is None
    assert found_object(TEAM, _answer(204)) is None


def test_found_channel_is_the_one_of_that_name() -> None:
    channels = [
        {"id": "19:a", "displayName": "planning"},
        {"id": "19:b", "displayName": "Planning"},
        {"id": "19:c", "displayName": "Planning later"},
    ]
    assert found_object(CHANNEL, _answer(200, {"value": channels})) == channels[1]
    assert found_object(CHANNEL, _answer(200, {"value": channels[:1]})) == channels[0]
    assert found_object(CHANNEL, _answer(200, {"value": channels[2:]})) is None
    assert found_object(CHANNEL, _answer(200, {"value": []})) is None
    assert found_object(CHANNEL, _answer(200, {"id": "19:x", "displayName": "Planning"})) is None


# --- against the emulator ----------------------------------------------------------------------------

BASE = "http://127.0.0.1/v1.0"


def _graph(emulator: GraphEmulator) -> GraphBatchClient:
    auth = GraphTokenAuth(EmulatorCredential(BASE), httpx.URL(BASE))
    http = build_http_client(
        httpx.URL(BASE), auth, timeout_seconds=5, transport=httpx.ASGITransport(app=emulator.app)
    )
    return GraphBatchClient(http)


async def _send(graph: GraphBatchClient, operation: Operation) -> ItemResponse:
    item = BatchRequestItem("k", operation.method, operation.url, operation.headers, operation.body)
    return (await graph.send([item])).items["k"]


async def _resend_after_a_lost_answer(job_id: str, written: Operation) -> tuple[ItemResponse, ItemResponse]:
    """Send an operation twice as the app would (the first answer is lost with the host), then
    confirm the second the way the processor does; the first answer and the recorded one."""
    emulator = GraphEmulator()
    tenant = emulator.tenant
    tenant.seed_users(1)
    tenant.groups["g1"] = {"id": "g1", "displayName": "Staff", "groupTypes": ["Unified"]}
    tenant.teams["g1"] = {"id": "g1"}
    tenant.channels["g1"] = [{"id": "19:general", "displayName": "General"}]
    graph = _graph(emulator)
    sent = repeatable(job_id, written)
    assert safe_to_resend(sent)
    first = await _send(graph, sent)
    assert 200 <= first.status < 300, first.body
    again = await _send(graph, repeatable(job_id, written))
    verdict = classify(WorkItem(operation=written), again, POLICY, sent=sent)
    if verdict is Verdict.SUCCEEDED:
        return first, again
    assert verdict is Verdict.EXISTS, again.body
    url = existing_lookup(sent, again)
    assert url is not None
    assert not sendable_problems("GET", url, {}, None)
    lookup = await _send(graph, Operation(id="lookup", method="GET", url=url))
    found = found_object(sent, lookup)
    assert found is not None, lookup.body
    return first, dataclasses.replace(lookup, body=found)


@pytest.mark.parametrize(
    "written",
    [
        _op("POST", "/groups", {**GROUP, "uniqueName": "falcon's"}),
        _op("POST", "/users", {"userPrincipalName": "new@contoso.com"}),
        _op("POST", "/teams/g1/channels", {"displayName": "O'Brien & Co"}),
        _op("POST", "/users/user1@contoso.com/events", {"subject": "Kick-off"}),
        _op("POST", "/groups/g1/events", {"subject": "All hands"}),
    ],
    ids=["group", "user", "channel", "user event", "group event"],
)
async def test_a_create_sent_twice_makes_one_object_and_both_answers_carry_it(written: Operation) -> None:
    first, recorded = await _resend_after_a_lost_answer("job-1", written)
    assert recorded.body["id"] == first.body["id"]


async def test_a_team_put_twice_is_the_one_team() -> None:
    emulator = GraphEmulator()
    emulator.tenant.groups["g2"] = {"id": "g2", "displayName": "New", "groupTypes": ["Unified"]}
    graph = _graph(emulator)
    put = _op("PUT", "/groups/g2/team", {})
    assert (await _send(graph, put)).status == 201
    again = await _send(graph, put)
    assert classify(WorkItem(operation=put), again, POLICY) is Verdict.EXISTS
    lookup = await _send(graph, Operation(id="l", method="GET", url=existing_lookup(put, again) or ""))
    assert found_object(put, lookup) == emulator.tenant.teams["g2"]
