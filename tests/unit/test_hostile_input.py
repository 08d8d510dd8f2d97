"""What a hostile producer can send, and what intake makes of it.

Each hostile form is refused at intake with a problem naming the field; the forms Graph
accepts are taken and normalised to the URL that is sent; and no problem ever repeats a
value it was given (a secret planted anywhere in a hostile job never shows up).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from batching.allowlist import (
    ALLOWED_HEADERS,
    GRAPH_HOSTS,
    find_allowed,
    object_url_hosts,
    object_url_problem,
    sendable_problems,
    url_as_sent,
    url_problem,
)
from batching.errors import Problem
from batching.intake import (
    MalformedWorkMessage,
    Rejection,
    decode_queue_text,
    parse_job,
    read_work_message,
)
from batching.models import JOB_ID_PATTERN, Job, Operation
from batching.references import UnresolvedReference, resolve

SECRET = "S3cr3t-Planted-Value"
GRAPH = "https://graph.microsoft.com/v1.0"


def _get(url: str, **extra: Any) -> dict[str, Any]:
    return {"id": "a", "method": "GET", "url": url, **extra}


def _member(odata_id: Any) -> dict[str, Any]:
    return {"id": "a", "method": "POST", "url": "/groups/g/members/$ref", "body": {"@odata.id": odata_id}}


def _rejected(raw: str | bytes) -> dict[str, str]:
    parsed = parse_job(raw)
    assert isinstance(parsed, Rejection), parsed
    assert parsed.problems
    return {p.field: p.message for p in parsed.problems}


def _accepted(raw: str | bytes) -> Job:
    parsed = parse_job(raw)
    assert isinstance(parsed, Job), parsed
    return parsed


# --- the table: hostile forms, each refused at intake naming its field -----------------------

HOSTILE: dict[str, tuple[list[dict[str, Any]], str]] = {
    # URLs
    "encoded-dot-dot": ([_get("/users/%2e%2e/groups")], "operations[0].url"),
    "encoded-dot-dot-upper": ([_get("/users/%2E%2E/groups")], "operations[0].url"),
    "mixed-dot-dot": ([_get("/users/%2E%2e/groups")], "operations[0].url"),
    "half-encoded-dot-dot": ([_get("/users/.%2E/groups")], "operations[0].url"),
    "encoded-dot": ([_get("/users/%2e")], "operations[0].url"),
    "plain-dot-dot": ([_get("/users/../applications")], "operations[0].url"),
    "double-encoded-dot-dot": ([_get("/users/%252e%252e/groups")], "operations[0].url"),
    "overlong-utf8-dot": ([_get("/users/%c0%ae%c0%ae/groups")], "operations[0].url"),
    "encoded-slash": ([_get("/users/a%2fb")], "operations[0].url"),
    "encoded-slash-upper": ([_get("/users/x%2F..%2Fgroups/manager")], "operations[0].url"),
    "encoded-backslash": ([_get("/users/a%5cb")], "operations[0].url"),
    "backslash": ([_get("/users/a\\b")], "operations[0].url"),
    "backslash-in-query": ([_get("/users?$filter=a eq 'b\\c'")], "operations[0].url"),
    "crlf": ([_get("/users/a\r\nHost: evil.example")], "operations[0].url"),
    "nul": ([_get("/users/a\x00")], "operations[0].url"),
    "encoded-nul": ([_get("/users/a%00")], "operations[0].url"),
    "encoded-newline": ([_get("/users/a%0a")], "operations[0].url"),
    "c1-control": ([_get("/users/a\x85")], "operations[0].url"),
    "tab-in-query": ([_get("/users?$filter=a\teq 1")], "operations[0].url"),
    "newline-in-query": ([_get("/users?$filter=a eq 1\n")], "operations[0].url"),
    "lone-surrogate": ([_get("/users/\ud800")], "operations[0].url"),
    "protocol-relative": ([_get("//evil.example/users")], "operations[0].url"),
    "absolute-https": ([_get(f"{GRAPH}/users")], "operations[0].url"),
    "absolute-other-scheme": ([_get("javascript:alert(1)")], "operations[0].url"),
    "versioned": ([_get("/v1.0/users")], "operations[0].url"),
    "versioned-beta": ([_get("beta/users")], "operations[0].url"),
    "fragment": ([_get("/users/a#x")], "operations[0].url"),
    "bad-escape": ([_get("/users/a%zz")], "operations[0].url"),
    "empty-segment": ([_get("/users//manager")], "operations[0].url"),
    "trailing-slash": ([_get("/users/a/")], "operations[0].url"),
    "space-in-path": ([_get("/users/a b")], "operations[0].url"),
    "not-allow-listed": ([{"id": "a", "method": "DELETE", "url": "/applications/x"}], "operations[0].url"),
    "reference-as-collection": (
        [_get("/users"), {"id": "b", "method": "DELETE", "url": "/{{a.kind}}/x"}],
        "operations[1].url",
    ),
    # headers
    "authorization": ([_get("/users/a", headers={"Authorization": "Bearer x"})], "operations[0].headers"),
    "authorization-lower": ([_get("/users/a", headers={"authorization": "x"})], "operations[0].headers"),
    "authorization-space": ([_get("/users/a", headers={"Authorization ": "x"})], "operations[0].headers"),
    "authorization-colon": ([_get("/users/a", headers={"Authorization:": "x"})], "operations[0].headers"),
    "authorization-leading-space": (
        [_get("/users/a", headers={" Authorization": "x"})],
        "operations[0].headers",
    ),
    "host": ([_get("/users/a", headers={"Host": "evil.example"})], "operations[0].headers"),
    "cookie": ([_get("/users/a", headers={"Cookie": "a=b"})], "operations[0].headers"),
    "content-length": ([_get("/users/a", headers={"Content-Length": "0"})], "operations[0].headers"),
    "transfer-encoding": (
        [_get("/users/a", headers={"Transfer-Encoding": "chunked"})],
        "operations[0].headers",
    ),
    "forwarded-for": ([_get("/users/a", headers={"X-Forwarded-For": "1.2.3.4"})], "operations[0].headers"),
    "unknown-header": ([_get("/users/a", headers={"X-Custom": "1"})], "operations[0].headers"),
    "empty-header-name": ([_get("/users/a", headers={"": "1"})], "operations[0].headers"),
    "space-in-header-name": ([_get("/users/a", headers={"Pre fer": "1"})], "operations[0].headers"),
    "crlf-in-header-value": (
        [_get("/users/a", headers={"Prefer": "return=minimal\r\nAuthorization: x"})],
        "operations[0].headers",
    ),
    "lf-in-header-value": ([_get("/users/a", headers={"Prefer": "a\nb"})], "operations[0].headers"),
    "nul-in-header-value": ([_get("/users/a", headers={"Prefer": "a\x00"})], "operations[0].headers"),
    "tab-in-header-value": ([_get("/users/a", headers={"Prefer": "a\tb"})], "operations[0].headers"),
    "non-ascii-header-value": ([_get("/users/a", headers={"Prefer": "caf\u00e9"})], "operations[0].headers"),
    "long-header-value": ([_get("/users/a", headers={"Prefer": "x" * 5000})], "operations[0].headers"),
    "header-twice": ([_get("/users/a", headers={"Prefer": "a", "prefer": "b"})], "operations[0].headers"),
    "non-json-content-type": (
        [{"id": "a", "method": "PATCH", "url": "/users/a", "headers": {"Content-Type": "text/plain"}}],
        "operations[0].headers",
    ),
    # @odata.id and @odata.bind
    "odata-other-host": ([_member("https://evil.example/v1.0/directoryObjects/x")], "operations[0].body"),
    "odata-http": ([_member("http://graph.microsoft.com/v1.0/directoryObjects/x")], "operations[0].body"),
    "odata-userinfo": (
        [_member("https://graph.microsoft.com@evil.example/v1.0/directoryObjects/x")],
        "operations[0].body",
    ),
    "odata-credentials": (
        [_member("https://user:pw@graph.microsoft.com/v1.0/directoryObjects/x")],
        "operations[0].body",
    ),
    "odata-port": (
        [_member("https://graph.microsoft.com:8443/v1.0/directoryObjects/x")],
        "operations[0].body",
    ),
    "odata-host-suffix": (
        [_member("https://graph.microsoft.com.evil.example/v1.0/directoryObjects/x")],
        "operations[0].body",
    ),
    "odata-protocol-relative": (
        [_member("//graph.microsoft.com/v1.0/directoryObjects/x")],
        "operations[0].body",
    ),
    "odata-relative": ([_member("directoryObjects/x")], "operations[0].body"),
    "odata-no-version": ([_member("https://graph.microsoft.com/directoryObjects/x")], "operations[0].body"),
    "odata-dot-dot": ([_member(f"{GRAPH}/directoryObjects/%2e%2e")], "operations[0].body"),
    "odata-extra-segments": ([_member(f"{GRAPH}/users/x/../../applications/y")], "operations[0].body"),
    "odata-not-a-directory-object": ([_member(f"{GRAPH}/applications/x")], "operations[0].body"),
    "odata-query": ([_member(f"{GRAPH}/directoryObjects/x?$select=id")], "operations[0].body"),
    "odata-fragment": ([_member(f"{GRAPH}/directoryObjects/x#y")], "operations[0].body"),
    "odata-crlf": ([_member(f"{GRAPH}/directoryObjects/x\r\n")], "operations[0].body"),
    "odata-not-text": ([_member(42)], "operations[0].body"),
    "odata-nested": (
        [
            {
                "id": "a",
                "method": "POST",
                "url": "/groups",
                "body": {"displayName": "x", "owners": [{"@odata.id": "https://evil.example/v1.0/users/x"}]},
            }
        ],
        "operations[0].body",
    ),
    "odata-bind-list": (
        [
            {
                "id": "a",
                "method": "PATCH",
                "url": "/groups/g",
                "body": {
                    "members@odata.bind": [f"{GRAPH}/directoryObjects/x", "https://evil.example/v1.0/users/y"]
                },
            }
        ],
        "operations[0].body",
    ),
    "odata-bind-single": (
        [{"id": "a", "method": "POST", "url": "/groups", "body": {"owners@odata.bind": "http://evil/x"}}],
        "operations[0].body",
    ),
    # references
    "reference-in-odata-host": (
        [_get("/users/a"), _member("https://{{a.host}}/v1.0/directoryObjects/x") | {"id": "b"}],
        "operations[1].body",
    ),
    "reference-as-whole-odata-id": (
        [_get("/users/a"), _member("{{a.link}}") | {"id": "b"}],
        "operations[1].body",
    ),
    "reference-to-unknown-operation": ([_get("/users/{{nope.id}}")], "operations[0].url"),
    "reference-to-itself": ([_get("/users/{{a.id}}")], "operations[0].url"),
    "reference-unknown-in-header": (
        [_get("/users/a", headers={"If-Match": "{{nope.etag}}"})],
        "operations[0].headers",
    ),
    "reference-unknown-in-body": (
        [{"id": "a", "method": "PATCH", "url": "/users/a", "body": {"jobTitle": "{{nope.title}}"}}],
        "operations[0].body",
    ),
}


def _document(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"jobId": "hostile-1", "correlationId": "flow-1", "operations": operations}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_form_is_refused_at_intake_naming_its_field(case: str) -> None:
    operations, field = HOSTILE[case]
    problems = _rejected(json.dumps(_document(operations)))
    assert field in problems, problems


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_form_is_refused_on_the_queue_too(case: str) -> None:
    operations, field = HOSTILE[case]
    data = decode_queue_text(json.dumps(_document(operations)))
    assert read_work_message(data) is None
    parsed = parse_job(data)
    assert isinstance(parsed, Rejection)
    assert field in {p.field for p in parsed.problems}


# --- planted secrets never come back ------------------------------------------------------------


def _plantings(value: Any) -> Iterator[Any]:
    """Copies of `value` with SECRET put in one place each: replacing or extending every
    string, and extending every object key."""
    if isinstance(value, str):
        yield SECRET
        yield value + SECRET
        yield SECRET + value
    elif isinstance(value, dict):
        for key, item in value.items():
            for planted in _plantings(item):
                yield {**value, key: planted}
            yield {(k + SECRET if k == key else k): v for k, v in value.items()}
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for planted in _plantings(item):
                yield [*value[:index], planted, *value[index + 1 :]]


def _assert_no_secret(problems: list[Problem]) -> None:
    for problem in problems:
        assert SECRET not in problem.message, problem
        assert SECRET.lower() not in problem.message.lower(), problem


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_secret_planted_anywhere_in_a_hostile_job_is_never_echoed(case: str) -> None:
    operations, _ = HOSTILE[case]
    document = _document(copy.deepcopy(operations))
    for planted in _plantings(document):
        for raw in (json.dumps(planted), json.dumps(planted).encode()):
            parsed = parse_job(raw)
            if isinstance(parsed, Rejection):
                _assert_no_secret(parsed.problems)
                assert all(SECRET not in p.field for p in parsed.problems), parsed.problems


@pytest.mark.parametrize(
    "operation",
    [
        {"id": "a", "method": SECRET, "url": "/users/a"},
        {"id": "a/" + SECRET, "method": "GET", "url": "/users/a"},
        {"id": "a", "method": "GET", "url": "/users/a", "dependsOn": [SECRET]},
        {"id": "a", "method": "GET", "url": f"/users/{SECRET}/licenseDetails"},
        {"id": "a", "method": "GET", "url": "/users/a", "headers": {SECRET: "x"}},
        {"id": "a", "method": "GET", "url": "/users/a", "headers": {"Prefer": SECRET + "\n"}},
        {"id": "a", "method": "GET", "url": "/users/a", "headers": {"Prefer": ["not", SECRET]}},
        {"id": "a", "method": "GET", "url": "/users/a", SECRET: SECRET},
        {"id": "a", "method": "GET", "url": "/users/a", "body": {"password": SECRET, "n": float("nan")}},
        {
            "id": "a",
            "method": "POST",
            "url": "/users",
            "body": {"passwordProfile": {"password": SECRET}} | {"x": 1e400},
        },
        {
            "id": "a",
            "method": "GET",
            "url": "/users/a",
            "body": {"@odata.id": f"https://{SECRET}/v1.0/users/x"},
        },
        {"id": [SECRET], "method": {"x": SECRET}, "url": 7, "headers": SECRET, "body": None},
    ],
)
def test_pydantic_and_app_messages_never_carry_the_input(operation: dict[str, Any]) -> None:
    for document in (
        {"jobId": SECRET + "\n", "correlationId": SECRET * 20, "operations": [operation]},
        {"jobId": "j", "correlationId": [SECRET], "requests": [operation]},
    ):
        parsed = parse_job(json.dumps(document))
        assert isinstance(parsed, Rejection)
        _assert_no_secret(parsed.problems)
        assert all(SECRET not in p.field for p in parsed.problems)
        assert parsed.job_id in {None, "j"}  # the jobId with a newline is never salvaged


def test_a_malformed_work_message_names_fields_never_values() -> None:
    forged = {
        "kind": "provisioning.work",
        "jobId": SECRET + "\n",
        "items": [
            {"operation": {"id": "x/" + SECRET, "method": SECRET, "url": "/users/a"}, "attempts": SECRET}
        ],
    }
    with pytest.raises(MalformedWorkMessage) as raised:
        read_work_message(json.dumps(forged).encode())
    assert SECRET not in str(raised.value)
    assert raised.value.problems
    assert isinstance(raised.value, ValueError)  # the service turns it into a Rejected row


# --- JSON Graph cannot take ------------------------------------------------------------------

_BODY = (
    '{{"jobId": "j", "operations": [{{"id": "a", "method": "PATCH", "url": "/users/a", "body": {body}}}]}}'
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "nested more than 32 levels"),
        ("[" * 33 + "]" * 33, "nested more than 32 levels"),
        ('{"x": ' + "1" + "0" * 400 + "}", "64-bit range"),
        ('{"x": -' + "9" * 5000 + "}", "64-bit range"),
        ('{"x": 9223372036854775808}', "64-bit range"),
        ('{"x": 1e400}', "not finite"),
        ('{"x": -1e400}', "not finite"),
        ('{"x": NaN}', "not finite"),
        ('{"x": [Infinity]}', "not finite"),
        ('{"x": -Infinity}', "not finite"),
        ('{"x": "\\ud800"}', "unpaired surrogate"),
        ('{"\\udfff": 1}', "unpaired surrogate"),
    ],
)
def test_json_graph_cannot_take_is_refused_naming_the_body(body: str, message: str) -> None:
    for raw in (_BODY.format(body=body), _BODY.format(body=body).encode()):
        problems = _rejected(raw)
        assert message in problems["operations[0].body"], problems


def test_deep_nesting_outside_a_body_and_at_the_top_is_refused_not_raised() -> None:
    assert "nested" in _rejected("[" * 100_000)["body"]
    assert "nested" in _rejected('{"operations": ' + "[" * 100_000 + "]" * 100_000 + "}")["operations[0]"]
    assert "nested" in _rejected('{"operations": [{"headers": ' + "[" * 1000)["operations[0].headers"]
    assert "not terminated" in _rejected('{"operations": "' + "[" * 1000)["body"]
    assert read_work_message(b"[" * 100_000) is None
    assert read_work_message(b'{"kind": "provisioning.work", "items": ' + b"[" * 100_000) is None


def test_nan_is_never_sent_on_as_null() -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = _BODY.format(body=f'{{"extensionAttribute1": {literal}}}')
        assert isinstance(parse_job(raw), Rejection)
        forged = (
            '{"kind": "provisioning.work", "jobId": "j", "items": [{"operation": '
            f'{{"id": "a", "method": "PATCH", "url": "/users/a", "body": {{"x": {literal}}}}}}}]}}'
        )
        with pytest.raises(MalformedWorkMessage):
            read_work_message(forged.encode())


def test_largest_numbers_graph_takes_are_kept() -> None:
    job = _accepted(_BODY.format(body='{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e308}'))
    assert job.operations[0].body == {"a": 2**63 - 1, "b": -(2**63), "c": 1.5e308}
    job = _accepted(_BODY.format(body="[" * 32 + "]" * 32))
    assert job.operations[0].body is not None


def test_a_thousand_operation_chain_is_accepted_and_a_long_cycle_is_named() -> None:
    chain = [_get("/users/a") | {"id": "op0"}]
    chain += [_get("/users/a") | {"id": f"op{i}", "dependsOn": [f"op{i - 1}"]} for i in range(1, 1000)]
    job = _accepted(json.dumps({"operations": chain}))
    assert job.operations[-1].depends_on == ("op998",)

    chain[0]["dependsOn"] = ["op999"]
    problems = _rejected(json.dumps({"operations": chain}))
    (where, message) = next(iter(problems.items()))
    assert where.startswith("operations[")
    assert where.endswith("].dependsOn")
    assert message.startswith("dependency cycle: ")
    assert "(1000 operations)" in message


def test_a_chain_through_references_is_accepted_too() -> None:
    chain = [{"id": "op0", "method": "POST", "url": "/groups", "body": {"displayName": "x"}}]
    chain += [
        {"id": f"op{i}", "method": "PATCH", "url": f"/groups/{{{{op{i - 1}.id}}}}", "body": {}}
        for i in range(1, 1000)
    ]
    job = _accepted(json.dumps({"operations": chain}))
    assert job.operations[999].depends_on == ("op998",)


def test_queue_text_with_a_lone_surrogate_is_rejected_not_raised() -> None:
    for text in ("\ud800", '{"operations": "\ud800"}', "  \udfff  ", "e30=\ud800"):
        data = decode_queue_text(text)
        assert read_work_message(data) is None
        parsed = parse_job(data)
        assert isinstance(parsed, Rejection)
        assert parsed.problems[0].field == "body"


# --- job ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["job\n", "job\r\n", "\njob", "job\x00", "a" * 65, "", "jöb", "job/1"])
def test_job_id_must_be_the_whole_string(job_id: str) -> None:
    problems = _rejected(json.dumps({"jobId": job_id, "operations": [_get("/users/a")]}))
    assert set(problems) == {"jobId"}


def test_job_id_pattern_is_safe_with_re_match() -> None:
    import re

    assert re.match(JOB_ID_PATTERN, "job-1.x_2")
    assert not re.match(JOB_ID_PATTERN, "job\n")
    assert not re.match(JOB_ID_PATTERN, "job-1\n")


# --- what Graph accepts is accepted, and sent encoded -------------------------------------------


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        (
            "/users?$filter=country eq 'Denmark' and accountEnabled eq true&$select=id",
            "/users?$filter=country%20eq%20'Denmark'%20and%20accountEnabled%20eq%20true&$select=id",
        ),
        ("/users?$filter=surname eq 'O''Brien'", "/users?$filter=surname%20eq%20'O''Brien'"),
        ("/users?$filter=surname eq %27O%27%27Brien%27", "/users?$filter=surname%20eq%20%27O%27%27Brien%27"),
        ("/users?$filter=displayName eq 'R&D #1'", "/users?$filter=displayName%20eq%20'R&D%20%231'"),
        ("/users?$filter=startswith(displayName,'50%')", "/users?$filter=startswith(displayName,'50%25')"),
        ('/users?$search="displayName:Ada"', "/users?$search=%22displayName:Ada%22"),
        ("/users?$filter=city eq 'Zürich'", "/users?$filter=city%20eq%20'Z%C3%BCrich'"),
        ("/users?$filter=city%20eq%20'Oslo'", "/users?$filter=city%20eq%20'Oslo'"),
        ("users/ada@contoso.com", "/users/ada@contoso.com"),
        ("/users/o'brien@contoso.com/manager", "/users/o'brien@contoso.com/manager"),
        ("/users/a%23b@contoso.com", "/users/a%23b@contoso.com"),
        ("/users/j%C3%B6rg@contoso.com", "/users/j%C3%B6rg@contoso.com"),
        ("/users/jörg@contoso.com", "/users/j%C3%B6rg@contoso.com"),
        ("/groups/g/members/x/$ref", "/groups/g/members/x/$ref"),
        ("/USERS/a/MemberOf", "/USERS/a/MemberOf"),
        ("/users/%24ref", "/users/%24ref"),
    ],
)
def test_graph_accepted_urls_are_taken_and_normalised_to_the_sent_form(written: str, sent: str) -> None:
    method = "DELETE" if written.endswith("$ref") else "GET"
    job = _accepted(json.dumps({"operations": [{"id": "a", "method": method, "url": written}]}))
    assert job.operations[0].url == sent
    assert url_as_sent(sent) == sent  # idempotent
    assert sendable_problems(method, sent, job.operations[0].headers, job.operations[0].body) == []


def test_references_are_kept_intact_when_the_url_is_normalised() -> None:
    job = _accepted(
        json.dumps(
            {
                "operations": [
                    {"id": "lookup", "method": "GET", "url": "/users?$filter=mail eq 'a@b.c'"},
                    _get("/users?$filter=userPrincipalName eq '{{ lookup.value.0.upn }}'") | {"id": "b"},
                ]
            }
        )
    )
    assert job.operations[1].url == "/users?$filter=userPrincipalName%20eq%20'{{ lookup.value.0.upn }}'"
    assert job.operations[1].depends_on == ("lookup",)


def test_spellings_that_send_the_same_url_hash_the_same() -> None:
    a = _accepted(json.dumps({"jobId": "j", "operations": [_get("/users?$filter=a eq 'b c'")]}))
    b = _accepted(json.dumps({"jobId": "j", "operations": [_get("users?$filter=a%20eq%20'b%20c'")]}))
    assert a.body_hash == b.body_hash


@pytest.mark.parametrize(
    "headers",
    [
        {"ConsistencyLevel": "eventual"},
        {"consistencylevel": "eventual"},
        {"Prefer": 'outlook.timezone="W. Europe Standard Time"'},
        {"If-Match": 'W/"abc"', "If-None-Match": "*"},
        {"Accept": "application/json", "Accept-Language": "nl-NL"},
        {"client-request-id": "8a0c6a1e-6d1f-4c1e-9f57-3f1f6c1c1c1c"},
        {"Content-Type": "application/json; charset=utf-8"},
    ],
)
def test_the_headers_graph_requests_need_are_accepted(headers: dict[str, str]) -> None:
    job = _accepted(
        json.dumps({"operations": [{"id": "a", "method": "PATCH", "url": "/users/a", "headers": headers}]})
    )
    assert job.operations[0].headers.items() >= headers.items()


def test_header_allow_list_is_short_and_has_no_credentials() -> None:
    assert set(ALLOWED_HEADERS.values()) == {
        "Content-Type",
        "ConsistencyLevel",
        "Prefer",
        "If-Match",
        "If-None-Match",
        "Accept",
        "Accept-Language",
        "client-request-id",
    }


@pytest.mark.parametrize(
    "odata_id",
    [
        f"{GRAPH}/directoryObjects/8a7c50d3-fcbd-4727-a889-8ab232dfea01",
        f"{GRAPH}/users/ada@contoso.com",
        "https://graph.microsoft.com/beta/groups/g",
        "https://graph.microsoft.us/v1.0/directoryObjects/x",
        "https://dod-graph.microsoft.us/v1.0/servicePrincipals/x",
        "https://microsoftgraph.chinacloudapi.cn/v1.0/devices/x",
        "HTTPS://Graph.Microsoft.com/v1.0/directoryObjects/x",
    ],
)
def test_object_urls_on_a_graph_host_are_accepted(odata_id: str) -> None:
    _accepted(json.dumps({"operations": [_member(odata_id)]}))


def test_object_url_with_a_reference_for_the_id_is_accepted() -> None:
    job = _accepted(
        json.dumps(
            {
                "operations": [
                    {"id": "user", "method": "POST", "url": "/users", "body": {"displayName": "x"}},
                    _member(f"{GRAPH}/directoryObjects/{{{{user.id}}}}") | {"id": "m"},
                    {
                        "id": "g",
                        "method": "POST",
                        "url": "/groups",
                        "body": {"members@odata.bind": [f"{GRAPH}/users/{{{{user.id}}}}"]},
                    },
                ]
            }
        )
    )
    assert job.operations[1].depends_on == ("user",)


def test_object_url_check_can_be_narrowed_to_the_configured_cloud() -> None:
    us = "https://graph.microsoft.us/v1.0/directoryObjects/x"
    assert object_url_problem(us) is None
    assert object_url_problem(us, frozenset({"graph.microsoft.com"})) is not None


def test_object_url_hosts_follow_the_configured_cloud() -> None:
    assert object_url_hosts("https://graph.microsoft.us/v1.0") == {"graph.microsoft.us"}
    assert object_url_hosts("https://GRAPH.microsoft.com/beta") == {"graph.microsoft.com"}
    assert object_url_hosts("http://127.0.0.1:7072/v1.0") == GRAPH_HOSTS  # the emulator


# --- the allow-list matches decoded paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/users/%2e%2e/groups",
        "/users/.%2e/groups",
        "/users/a%2Fb",
        "/users/a%5Cb",
        "/users/..",
        "/users/a/../../applications",
        "/users/a\\..\\applications",
        "/users/%252e%252e",
        "/users/a%00",
        "/users/%ff",
        "/users/a\r\n",
        "/users//x",
        "/users/a#x",
    ],
)
def test_find_allowed_refuses_what_could_mean_another_path(path: str) -> None:
    assert find_allowed("GET", path) is None or find_allowed("GET", path) is None
    assert all(find_allowed(method, path) is None for method in ("GET", "POST", "PATCH", "PUT", "DELETE"))


def test_find_allowed_matches_decoded_segments_case_insensitively() -> None:
    assert find_allowed("GET", "/users/ada%40contoso.com") is not None
    assert find_allowed("PUT", "/users/a/manager/%24ref") is not None
    assert find_allowed("POST", "/GROUPS/g/Members/$REF") is not None
    assert find_allowed("GET", "/users/{{x.id}}") is not None  # intake: a reference stands for an id
    assert find_allowed("GET", "/{{x.kind}}/a") is None  # but never for a word of the path


# --- references resolved at send time ------------------------------------------------------------


def _op(url: str, **extra: Any) -> Operation:
    return Operation(id="b", method=extra.pop("method", "GET"), url=url, depends_on=("x",), **extra)


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("o'brien@contoso.com", "/users?$filter=userPrincipalName%20eq%20'o%27%27brien%40contoso.com'"),
        (
            "x' or 1 eq 1 or 'y",
            "/users?$filter=userPrincipalName%20eq%20'x%27%27%20or%201%20eq%201%20or%20%27%27y'",
        ),
        ("a&$top=999", "/users?$filter=userPrincipalName%20eq%20'a%26%24top%3D999'"),
        ("a#b", "/users?$filter=userPrincipalName%20eq%20'a%23b'"),
        ("50%", "/users?$filter=userPrincipalName%20eq%20'50%25'"),
        ("Zoë", "/users?$filter=userPrincipalName%20eq%20'Zo%C3%AB'"),
    ],
)
def test_a_reference_in_a_quoted_query_string_is_odata_escaped_and_url_encoded(value: str, sent: str) -> None:
    template = url_as_sent("/users?$filter=userPrincipalName eq '{{x.upn}}'")
    resolved = resolve(_op(template), {"x": {"upn": value}})
    assert resolved.url == sent
    assert sendable_problems("GET", resolved.url, {}, None) == []


@pytest.mark.parametrize(
    "value", ["8a7c50d3-fcbd-4727-a889-8ab232dfea01", "42", "true", "2026-01-01T00:00:00Z"]
)
def test_a_plain_value_may_stand_outside_a_quoted_string(value: str) -> None:
    resolved = resolve(_op(url_as_sent("/users?$filter=id eq {{x.v}}")), {"x": {"v": value}})
    assert resolved.url == f"/users?$filter=id%20eq%20{value}"


@pytest.mark.parametrize("value", ["a or true", "1) or (1 eq 1", "a'b", "x&$top=1", "a b"])
def test_anything_else_outside_a_quoted_string_fails_the_operation(value: str) -> None:
    with pytest.raises(UnresolvedReference, match="quoted string"):
        resolve(_op(url_as_sent("/users?$filter=id eq {{x.v}}")), {"x": {"v": value}})


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("ada@contoso.com", "/users/ada@contoso.com/manager"),
        ("a b", "/users/a%20b/manager"),
        ("jörg", "/users/j%C3%B6rg/manager"),
        ("a?b#c", "/users/a%3Fb%23c/manager"),
    ],
)
def test_a_reference_in_the_path_is_one_encoded_segment(value: str, sent: str) -> None:
    resolved = resolve(_op("/users/{{x.id}}/manager"), {"x": {"id": value}})
    assert resolved.url == sent
    assert sendable_problems("GET", resolved.url, {}, None) == []


@pytest.mark.parametrize("value", ["a/../../groups", "..", ".", "", "a\\b", "%2e%2e", "a\nb", "x/y"])
def test_a_path_reference_that_cannot_be_one_segment_fails_the_operation(value: str) -> None:
    with pytest.raises(UnresolvedReference, match="path segment"):
        resolve(_op("/users/{{x.id}}/manager"), {"x": {"id": value}})


@pytest.mark.parametrize("value", ["a\r\nAuthorization: x", "a\nb", "caf\u00e9", "a\x00"])
def test_a_reference_cannot_put_control_characters_in_a_header(value: str) -> None:
    with pytest.raises(UnresolvedReference, match="header"):
        resolve(_op("/users/a", headers={"If-Match": "{{x.etag}}"}), {"x": {"etag": value}})


@pytest.mark.parametrize(
    "value",
    ["x/../../applications/y", "x?$select=id", "x#y", "%2e%2e"],
)
def test_an_object_url_is_checked_again_once_its_reference_is_resolved(value: str) -> None:
    operation = _op(
        "/groups/g/members/$ref",
        method="POST",
        headers={"Content-Type": "application/json"},
        body={"@odata.id": f"{GRAPH}/directoryObjects/{{{{x.id}}}}"},
    )
    resolved = resolve(operation, {"x": {"id": value}})
    problems = sendable_problems(resolved.method, resolved.url, resolved.headers, resolved.body)
    assert problems
    assert all("@odata.id" in p for p in problems)
    assert all(value not in p for p in problems)


def test_the_send_time_check_refuses_a_hand_written_operation() -> None:
    assert sendable_problems("GET", "/users/%2e%2e/groups", {}, None)
    assert sendable_problems("GET", "/users?$filter=a eq 1", {}, None) == [
        "url is not encoded as it must be sent"
    ]
    assert sendable_problems("GET", "/users/a", {"Authorization": "x"}, None)
    assert sendable_problems("DELETE", "/directoryRoles/abc", {}, None) == [
        "DELETE on this path is not an allowed operation"
    ]
    assert sendable_problems("GET", "/users/a", {}, None) == []
    assert url_problem("/users/a") is None
