"""Generated and mutated input through every door and the app's own messages: never an
exception other than the documented one, never a 5xx, every refusal names a field (and never
repeats a value), and every accepted job is safe to send.

- `parse_job` on generated, mutated and raw documents and bytes;
- the queue door: `decode_queue_text` on plain, base64 and broken base64 text, then intake;
- realistic jobs (users with passwords, groups, members `$ref`, chained `{{ref}}` teams and
  channels, Graph `$batch` bodies), accepted as written and then mutated structurally;
- the app's work messages, packed by `pack_work` from valid jobs and mutated (types flipped,
  huge, negative and non-finite counters, deep nesting, lone surrogates, extra and missing
  fields): `read_work_message` returns a bounded `WorkMessage` or raises
  `MalformedWorkMessage` naming fields, nothing else;
- the HTTP door, `http_api.post_job` / `get_job`, in front of an in-memory stand-in for the
  service (the same intake and packing, no storage): 2xx/4xx only, problem+json naming fields.

The default run is short (FUZZ_EXAMPLES=150 per test) so the unit suite stays fast. The long
run, 10,000 examples per test:

    FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/unit/test_fuzz_intake.py -q
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import time
from typing import Any, cast

import azure.functions as func
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from batching import http_api
from batching.allowlist import ALLOWED_OPERATIONS, header_problems, sendable_problems, url_as_sent
from batching.callers import PRINCIPAL_HEADER
from batching.connector.callback_urls import AllowedHosts
from batching.errors import Problem
from batching.intake import (
    MalformedWorkMessage,
    Rejection,
    decode_queue_text,
    load_document,
    parse_job,
    read_work_message,
)
from batching.models import (
    MAX_COUNTER,
    MAX_INT,
    MAX_ITEMS_PER_MESSAGE,
    MAX_SEQ,
    MAX_UNIX_TIME,
    MAX_WAIT_SECONDS,
    MIN_INT,
    Job,
    WorkMessage,
    WorkPriority,
    is_job_id,
    is_row_key,
)
from batching.records import JobSummary
from batching.references import has_references
from batching.retry import RetryPolicy
from batching.service import Accepted, Conflict, Invalid, JobView, ProvisioningService
from batching.settings import Settings
from batching.workqueue import WorkTooLarge, pack_work

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# A problem's field: a path of plain names and positions (`operations[3].headers`, `body`).
FIELD = re.compile(r"[A-Za-z_$@][A-Za-z0-9_]*(?:\[\d+\])*(?:\.[A-Za-z_$@][A-Za-z0-9_]*(?:\[\d+\])*)*")

# --- strategies ------------------------------------------------------------------------------

# Any code point, unpaired surrogates and controls included.
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
awkward_text = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "x\r\nHost: evil",
        "\x00",
        "\x85",
        "%2e%2e",
        "..",
        "%2F",
        "\\",
        "{{",
        "{{a.id}}",
        "{{ nope }}",
        "'",
        "O''Brien",
        "https://evil.example/v1.0/users/x",
        "",
        " ",
        "\ufeff",
        "\u2028",
        "é",
    ]
)
text = st.one_of(any_text, awkward_text)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, 10**400]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)),
    max_leaves=20,
)


def _url_for(template: str, ident: str) -> str:
    return template.replace("{id}", ident)


ids = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), text, st.integers())
segments = st.one_of(
    st.from_regex(r"[A-Za-z0-9@._-]{1,20}", fullmatch=True),
    st.sampled_from(["ada@contoso.com", "%2e%2e", "..", ".", "a%2Fb", "a b", "{{a.id}}", "%zz", "jörg"]),
)
queries = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "?$filter=country eq 'Denmark' and accountEnabled eq true&$select=id",
            "?$filter=surname eq 'O''Brien'",
            "?$select=id,displayName&$top=999",
            "?$filter=startswith(displayName,'50%')",
            "?$filter=mail eq '{{a.mail}}'",
        ]
    ),
    text.map(lambda t: "?" + t),
)
urls = st.one_of(
    st.builds(
        lambda op, ident, query: _url_for(op.template, ident) + query,
        st.sampled_from(ALLOWED_OPERATIONS),
        segments,
        queries,
    ),
    text,
)
headers: st.SearchStrategy[dict[Any, Any]] = st.one_of(
    st.just({}),
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["Content-Type", "ConsistencyLevel", "Prefer", "If-Match", "Authorization", "Host"]
            ),
            st.sampled_from(["Authorization ", "Authorization:", "X-Custom", "prefer", ""]),
            text,
        ),
        st.one_of(
            st.sampled_from(["application/json", "eventual", "return=minimal", "a\r\nb"]), text, numbers
        ),
        max_size=3,
    ),
)
bodies = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries({"displayName": text, "accountEnabled": st.booleans()}),
    st.builds(
        lambda ident: {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{ident}"}, segments
    ),
    st.builds(lambda ident: {"members@odata.bind": [ident]}, st.one_of(text, st.just("http://evil/x"))),
    json_values,
)
methods = st.one_of(st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE", "get", "FETCH"]), text)
operations = st.fixed_dictionaries(
    {"id": ids, "method": methods, "url": urls},
    optional={"headers": headers, "body": bodies, "dependsOn": st.one_of(ids, st.lists(ids, max_size=3))},
)
valid_operations = st.builds(
    lambda i, op, ident: {"id": f"op{i}", "method": op.method, "url": _url_for(op.template, ident)},
    st.integers(min_value=0, max_value=50),
    st.sampled_from(ALLOWED_OPERATIONS),
    st.from_regex(r"[A-Za-z0-9@._-]{1,20}", fullmatch=True).filter(lambda s: s not in {".", ".."}),
)
jobs = st.fixed_dictionaries(
    {"operations": st.lists(st.one_of(valid_operations, operations), min_size=1, max_size=6)},
    optional={
        "jobId": st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), text, st.just("job\n")),
        "correlationId": st.one_of(text, numbers),
    },
)


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document with some of its parts dropped, swapped for other types, or nested deep."""
    document = draw(documents)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        document = _mutate(draw, document)
    return document


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value, key=repr)))
        action = draw(st.sampled_from(["drop", "swap", "recurse", "rename"]))
        if action == "drop":
            return {k: v for k, v in value.items() if k != key}
        if action == "swap":
            return {**value, key: draw(json_values)}
        if action == "rename":
            return {(draw(text) if k == key else k): v for k, v in value.items()}
        return {**value, key: _mutate(draw, value[key])}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(min_value=0, max_value=len(value) - 1))
        return [*value[:index], _mutate(draw, value[index]), *value[index + 1 :]]
    action = draw(st.sampled_from(["keep", "nest", "replace"]))
    if action == "nest":
        depth = draw(st.sampled_from([1, 31, 32, 33, 40]))  # deeper: raw_texts()
        nested: Any = value
        for _ in range(depth):
            nested = [nested] if draw(st.booleans()) else {"x": nested}
        return nested
    if action == "replace":
        return draw(json_values)
    return value


def _dumps(document: Any) -> str:
    """JSON text as a hostile producer writes it: NaN, huge integers and lone surrogates
    included (`json.dumps` escapes surrogates as `\\udXXX`)."""
    return json.dumps(document, allow_nan=True)


@st.composite
def raw_texts(draw: st.DrawFn) -> str:
    """Text of a (mutated) job, sometimes cut short, or spliced with deep nesting."""
    body = _dumps(draw(mutated(jobs)))
    choice = draw(st.sampled_from(["whole", "cut", "deep", "junk"]))
    if choice == "cut":
        return body[: draw(st.integers(min_value=0, max_value=len(body)))]
    if choice == "deep":
        depth = draw(st.integers(min_value=30, max_value=20_000))
        opener = draw(st.sampled_from(["[", '{"a":', '["\\ud800",']))
        closer = {"[": "]", '{"a":': "}", '["\\ud800",': "]"}[opener]
        inner = opener * depth + "1" + closer * depth
        at = body.find("null")
        return body[:at] + inner + body[at + 4 :] if at >= 0 else inner
    if choice == "junk":
        return draw(st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200))
    return body


# --- properties ------------------------------------------------------------------------------


def _check_outcome(outcome: Job | Rejection) -> None:
    assert isinstance(outcome, (Job, Rejection))
    if isinstance(outcome, Rejection):
        assert outcome.problems, "a rejection names at least one problem"
        for problem in outcome.problems:
            assert isinstance(problem.field, str)
            assert FIELD.fullmatch(problem.field), problem
            assert isinstance(problem.message, str)
            assert problem.message
            problem.field.encode("utf-8")  # storable and printable as is
            problem.message.encode("utf-8")
        assert outcome.job_id is None or is_job_id(outcome.job_id)
        assert all(is_row_key(op_id) for op_id in outcome.operation_ids)
        if outcome.correlation_id is not None:
            outcome.correlation_id.encode("utf-8")
        return
    assert is_job_id(outcome.job_id)
    for operation in outcome.operations:
        assert is_row_key(operation.id)
        assert operation.url == url_as_sent(operation.url)
        assert header_problems(operation.headers) == []
        json.dumps(operation.body, allow_nan=False).encode("utf-8")  # no NaN, no surrogates
        _check_numbers(operation.body)
        if not has_references(operation):
            assert sendable_problems(operation.method, operation.url, operation.headers, operation.body) == []


def _check_numbers(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            assert math.isfinite(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            assert MIN_INT <= item <= MAX_INT


@FUZZ
@given(mutated(jobs))
def test_parse_job_is_total_on_mutated_documents(document: Any) -> None:
    text_form = _dumps(document)
    _check_outcome(parse_job(text_form))
    _check_outcome(parse_job(text_form.encode("utf-8", "surrogatepass")))


@FUZZ
@given(raw_texts())
def test_parse_job_is_total_on_raw_text(raw: str) -> None:
    _check_outcome(parse_job(raw))
    _check_outcome(parse_job(raw.encode("utf-8", "surrogatepass")))


@FUZZ
@given(st.binary(max_size=300))
def test_parse_job_is_total_on_bytes(raw: bytes) -> None:
    _check_outcome(parse_job(raw))


def _through_the_queue(text_form: str) -> None:
    for message in (text_form, base64.b64encode(text_form.encode("utf-8", "surrogatepass")).decode()):
        data = decode_queue_text(message)
        assert isinstance(data, bytes)
        try:
            work = read_work_message(data)
        except MalformedWorkMessage as malformed:
            problems = malformed.problems
            assert problems
            assert all(p.field for p in problems)
            continue
        if work is not None:
            assert isinstance(work, WorkMessage)
            assert is_job_id(work.job_id)
            continue
        _check_outcome(parse_job(data))


@FUZZ
@given(raw_texts())
def test_queue_intake_is_total_on_submissions(raw: str) -> None:
    _through_the_queue(raw)


work_messages = st.fixed_dictionaries(
    {
        "kind": st.just("provisioning.work"),
        "jobId": st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), text),
        "items": st.lists(
            st.fixed_dictionaries(
                {"operation": st.one_of(valid_operations, operations)},
                optional={"attempts": numbers, "followsCreate": st.booleans(), "throttledSince": numbers},
            ),
            max_size=4,
        ),
    },
    optional={"priority": st.sampled_from(["high", "normal", "low", "urgent"]), "correlationId": text},
)


@FUZZ
@given(mutated(work_messages))
def test_queue_intake_is_total_on_work_messages(document: Any) -> None:
    _through_the_queue(_dumps(document))


@FUZZ
@given(st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=300))
def test_decode_queue_text_is_total(text_form: str) -> None:
    _through_the_queue(text_form)


# --- realistic jobs, as written and mutated ---------------------------------------------------

# Planted in passwords, ids, urls, header values and bodies: no refusal may repeat it. It holds
# a `-`, so it is never a plain name a problem could show as a field.
SECRET = "S3cr3t-Fuzz-Planted"
GRAPH_OBJECTS = "https://graph.microsoft.com/v1.0/directoryObjects/"

names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
# Any Unicode text a person might type (controls included: JSON escapes them), no lone surrogates.
typed = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
planted = st.one_of(st.just(SECRET), names.map(lambda name: f"{name}-{SECRET}"))


def _ref(op_id: str, path: str) -> str:
    return "{{" + op_id + "." + path + "}}"


@st.composite
def _onboarding(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    """A new user: created with a password, given a title, a manager and a licence."""
    user, manager = f"{prefix}user", f"{prefix}manager"
    upn = f"{draw(names)}@contoso.com"
    ops: list[dict[str, Any]] = [
        {
            "id": user,
            "method": "POST",
            "url": "/users",
            "body": {
                "accountEnabled": True,
                "displayName": draw(st.one_of(planted, typed)),
                "mailNickname": draw(names),
                "userPrincipalName": upn,
                "usageLocation": "NL",
                "passwordProfile": {"password": draw(planted), "forceChangePasswordNextSignIn": True},
            },
        },
        {
            "id": f"{prefix}title",
            "method": "PATCH",
            "url": f"/users/{_ref(user, 'id')}",
            "headers": {"If-Match": draw(planted)},
            "body": {"jobTitle": draw(planted), "department": draw(typed)},
        },
        {"id": manager, "method": "GET", "url": f"/users/{draw(names)}@contoso.com?$select=id"},
        {
            "id": f"{prefix}setmanager",
            "method": "PUT",
            "url": f"/users/{_ref(user, 'id')}/manager/$ref",
            "body": {"@odata.id": GRAPH_OBJECTS + _ref(manager, "id")},
            "dependsOn": [user],
        },
    ]
    if draw(st.booleans()):
        ops.append(
            {
                "id": f"{prefix}licence",
                "method": "POST",
                "url": f"/users/{upn}/assignLicense",
                "body": {"addLicenses": [{"skuId": draw(st.uuids()).hex}], "removeLicenses": []},
                "dependsOn": user,
            }
        )
    return ops


@st.composite
def _team(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    """A Microsoft 365 group with a member found by `$filter`, its team and a channel."""
    group, lookup, team = f"{prefix}group", f"{prefix}lookup", f"{prefix}team"
    return [
        {
            "id": group,
            "method": "POST",
            "url": "/groups",
            "body": {
                "displayName": draw(planted),
                "mailNickname": draw(names),
                "groupTypes": ["Unified"],
                "mailEnabled": True,
                "securityEnabled": False,
                "owners@odata.bind": [GRAPH_OBJECTS + draw(st.uuids()).hex],
            },
        },
        {
            "id": lookup,
            "method": "GET",
            "url": f"/users?$filter=mail eq '{draw(names)}@contoso.com'&$select=id",
            "headers": {"ConsistencyLevel": "eventual", "client-request-id": draw(planted)},
        },
        {
            "id": f"{prefix}member",
            "method": "POST",
            "url": f"/groups/{_ref(group, 'id')}/members/$ref",
            "body": {"@odata.id": GRAPH_OBJECTS + _ref(lookup, "value.0.id")},
        },
        {"id": team, "method": "PUT", "url": f"/groups/{_ref(group, 'id')}/team", "body": {}},
        {
            "id": f"{prefix}channel",
            "method": "POST",
            "url": f"/teams/{_ref(team, 'id')}/channels",
            "headers": {"Prefer": draw(planted), "Accept-Language": "nl-NL"},
            "body": {"displayName": draw(planted), "description": draw(typed)},
        },
    ]


@st.composite
def _updates(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    """Plain updates of existing users and a read, no dependencies."""
    return [
        {
            "id": f"{prefix}u{index}",
            "method": draw(st.sampled_from(["PATCH", "GET"])),
            "url": f"/users/{draw(names)}@contoso.com",
            "body": {"officeLocation": draw(planted)} if index % 2 else None,
        }
        for index in range(draw(st.integers(min_value=1, max_value=3)))
    ]


@st.composite
def realistic_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid job as flows and scripts write it: the job contract, or a Graph `$batch` body
    (numeric ids, a single-string `dependsOn`, dependents listed before their dependencies)."""
    ops: list[dict[str, Any]] = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        scenario = draw(st.sampled_from([_onboarding, _team, _updates]))
        ops.extend(draw(scenario(f"s{index}")))
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["jobId"] = draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True))
    if draw(st.booleans()):
        document["correlationId"] = draw(planted)
    if draw(st.booleans()):
        document["operations"] = ops
        return document
    # as a Graph $batch body: ids renumbered 1..n, some written as numbers, a lone dependency
    # as a string, and the order shuffled (a dependent may come before its dependency)
    text_form = json.dumps(ops)
    for position, op in sorted(enumerate(ops), key=lambda pair: -len(pair[1]["id"])):
        text_form = text_form.replace(op["id"], str(position + 1))
    requests = json.loads(text_form)
    for request in requests:
        if draw(st.booleans()):
            request["id"] = int(request["id"])
        if len(request.get("dependsOn", [])) == 1 and draw(st.booleans()):
            request["dependsOn"] = request["dependsOn"][0]
    document["requests"] = draw(st.permutations(requests))
    return document


def _mutate_structure(draw: st.DrawFn, document: dict[str, Any]) -> Any:
    """One mutation a hostile or careless producer makes to a job."""
    key = "operations" if "operations" in document else "requests"
    ops = [dict(op) for op in document[key]]
    op = draw(st.integers(min_value=0, max_value=len(ops) - 1))
    field_name = draw(st.sampled_from(["id", "method", "url", "headers", "body", "dependsOn"]))
    action = draw(
        st.sampled_from(
            [
                "drop-field",
                "retype-field",
                "duplicate-op",
                "self-dependency",
                "cycle",
                "unknown-dependency",
                "unknown-reference",
                "evil-url",
                "evil-header",
                "evil-object-url",
                "bad-number",
                "lone-surrogate",
                "deep-body",
                "extra-field",
                "drop-container",
                "empty-container",
                "bad-job-id",
            ]
        )
    )
    if action == "drop-field":
        ops[op].pop(field_name, None)
    elif action == "retype-field":
        ops[op][field_name] = draw(
            st.one_of(json_values, st.just([SECRET]), st.just({SECRET: SECRET}), st.integers())
        )
    elif action == "duplicate-op":
        ops.append(dict(ops[op], id=str(ops[op].get("id")).upper()))
    elif action == "self-dependency":
        ops[op]["dependsOn"] = [ops[op].get("id")]
    elif action == "cycle":
        ops[0]["dependsOn"] = [ops[-1].get("id")]
        ops[-1]["dependsOn"] = [ops[0].get("id")]
    elif action == "unknown-dependency":
        ops[op]["dependsOn"] = [SECRET]
    elif action == "unknown-reference":
        ops[op]["url"] = f"/users/{_ref(SECRET, 'id')}"
    elif action == "evil-url":
        ops[op]["url"] = draw(
            st.sampled_from(
                [
                    f"https://{SECRET}.example/v1.0/users",
                    f"//{SECRET}.example/users",
                    f"/v1.0/users/{SECRET}",
                    f"/users/%2e%2e/{SECRET}",
                    f"/users/{SECRET}\r\nHost: evil",
                    f"/applications/{SECRET}",
                    f"/users/{SECRET}%2Fmanager",
                ]
            )
        )
    elif action == "evil-header":
        ops[op]["headers"] = draw(
            st.sampled_from(
                [
                    {"Authorization": f"Bearer {SECRET}"},
                    {"Authorization ": SECRET},
                    {f"X-{SECRET}": "1"},
                    {"If-Match": f"{SECRET}\r\nHost: evil"},
                    {"Prefer": [SECRET]},
                    {"Content-Type": f"text/{SECRET}"},
                ]
            )
        )
    elif action == "evil-object-url":
        ops[op]["body"] = {"@odata.id": f"https://{SECRET}.example/v1.0/users/x", "password": SECRET}
    elif action == "bad-number":
        ops[op]["body"] = {SECRET: draw(st.sampled_from([float("nan"), float("inf"), 2**63, -(2**63) - 1]))}
    elif action == "lone-surrogate":
        ops[op][draw(st.sampled_from(["id", "url", "body"]))] = SECRET + "\ud800"
    elif action == "deep-body":
        nested: Any = SECRET
        for _ in range(draw(st.sampled_from([31, 32, 33, 36, 60]))):
            nested = {SECRET: nested} if draw(st.booleans()) else [nested]
        ops[op]["body"] = nested
    elif action == "extra-field":
        ops[op][draw(st.sampled_from([SECRET, "passwordProfile", "Authorization", "id ", "kind"]))] = SECRET
    elif action == "drop-container":
        return {k: v for k, v in document.items() if k != key}
    elif action == "empty-container":
        ops = []
    elif action == "bad-job-id":
        return {**document, key: ops, "jobId": draw(st.sampled_from([SECRET + "!", SECRET * 4, [SECRET], 7]))}
    return {**document, key: ops}


@st.composite
def mutated_realistic_jobs(draw: st.DrawFn) -> Any:
    document: Any = draw(realistic_jobs())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        ops = document.get("operations", document.get("requests")) if isinstance(document, dict) else None
        if isinstance(ops, list) and ops and all(isinstance(op, dict) for op in ops) and draw(st.booleans()):
            document = _mutate_structure(draw, document)
        else:
            document = _mutate(draw, document)
    return document


def _never_echoed(problems: list[Any]) -> None:
    for problem in problems:
        assert SECRET.lower() not in str(problem).lower(), problem


@FUZZ
@given(realistic_jobs())
def test_realistic_jobs_are_accepted_through_both_doors_alike(document: dict[str, Any]) -> None:
    text_form = json.dumps(document)
    direct = parse_job(text_form)
    assert isinstance(direct, Job), direct
    _check_outcome(direct)
    for message in (text_form, base64.b64encode(text_form.encode()).decode(), f"\n {text_form}\n"):
        data = decode_queue_text(message)
        assert read_work_message(data) is None  # a job, not the app's own work
        queued = parse_job(data)
        assert isinstance(queued, Job)
        assert queued.body_hash == direct.body_hash
    sent = {op.id: op for op in direct.operations}
    for op in sent.values():
        assert all(dep in sent for dep in op.depends_on)


@FUZZ
@given(mutated_realistic_jobs())
def test_mutated_realistic_jobs_are_refused_naming_fields_never_values(document: Any) -> None:
    text_form = _dumps(document)
    for raw in (text_form, text_form.encode("utf-8", "surrogatepass")):
        outcome = parse_job(raw)
        _check_outcome(outcome)
        event(type(outcome).__name__)
        if isinstance(outcome, Rejection):
            _never_echoed(outcome.problems)


# --- the queue door: text as producers put it there ----------------------------------------


@st.composite
def queue_texts(draw: st.DrawFn) -> str:
    """Queue message text: a (mutated) job plain or base64, and base64 gone wrong."""
    document = draw(st.one_of(realistic_jobs(), mutated_realistic_jobs()))
    body = _dumps(document).encode("utf-8", "surrogatepass")
    encoded = base64.b64encode(body).decode()
    form = draw(
        st.sampled_from(
            ["plain", "base64", "padded", "mime", "urlsafe", "unpadded", "flipped", "cut", "bom", "junk"]
        )
    )
    if form == "plain":
        return body.decode("utf-8", "surrogatepass")
    if form == "padded":
        return f"  {encoded}\n"
    if form == "mime":
        return base64.encodebytes(body).decode()  # a line break every 76 characters
    if form == "urlsafe":
        return base64.urlsafe_b64encode(body).decode()
    if form == "unpadded":
        return encoded.rstrip("=")
    if form == "flipped" and encoded:
        at = draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        return (
            encoded[:at] + draw(st.sampled_from(["!", "-", "_", "=", " ", "\x00", "é"])) + encoded[at + 1 :]
        )
    if form == "cut":
        return encoded[: draw(st.integers(min_value=0, max_value=len(encoded)))]
    if form == "bom":
        return "\ufeff" + body.decode("utf-8", "surrogatepass")
    if form == "junk":
        return base64.b64encode(draw(st.binary(max_size=200))).decode()
    return encoded


@FUZZ
@given(queue_texts())
def test_queue_door_decodes_any_text_and_refuses_naming_fields(message: str) -> None:
    data = decode_queue_text(message)
    assert isinstance(data, bytes)
    stripped = message.strip()
    if stripped.startswith(("{", "[")):
        assert data == stripped.encode("utf-8", "surrogatepass")  # plain JSON is taken as it is
    work = read_work_message(data)  # a job document is never the app's own work
    assert work is None
    outcome = parse_job(data)
    _check_outcome(outcome)
    event(type(outcome).__name__)
    if isinstance(outcome, Rejection):
        _never_echoed(outcome.problems)


@FUZZ
@given(realistic_jobs())
def test_base64_of_a_job_decodes_to_exactly_its_bytes(document: dict[str, Any]) -> None:
    body = json.dumps(document, ensure_ascii=draw_ascii(document)).encode()
    assert decode_queue_text(base64.b64encode(body).decode()) == body
    assert decode_queue_text(f" {base64.b64encode(body).decode()}\r\n") == body


def draw_ascii(document: dict[str, Any]) -> bool:
    """Both spellings of non-ASCII text, chosen by the document itself (stable per example)."""
    return len(json.dumps(document)) % 2 == 0


# --- the app's own work messages, packed from valid jobs and mutated -------------------------

# Where a problem of a work message may point: its own fields.
WORK_ROOTS = frozenset({"body", "kind", "jobId", "correlationId", "priority", "ticket", "items"})
COUNTERS = ("attempts", "throttled", "replicationWaited", "throttledSince", "seq")
# Raw JSON text for a counter: what `json.dumps` cannot write (NaN is written as such).
hostile_counters = st.sampled_from(
    [
        "-1",
        "-9223372036854775808",
        "9223372036854775807",
        "18446744073709551616",
        "1" + "0" * 400,
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-Infinity",
        "1.5",
        "-0.0",
        "1e-320",
        '"3"',
        "true",
        "null",
        "[]",
        "{}",
        f'"{SECRET}"',
        "10001",
        "4102444801",
        "2591999",
        "99999999999",
        "9999",  # within the bounds, but more than the app ever writes
        "4102444800",
        "2000000000.5",
    ]
)


@st.composite
def work_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A work message exactly as the app writes one: `pack_work` on a valid job's items, some
    of them already sent (attempts, throttling, replication waits, as the processor counts)."""
    parsed = parse_job(json.dumps(draw(realistic_jobs())))
    assert isinstance(parsed, Job)
    items = []
    for item in parsed.work_items():
        attempts = draw(st.integers(min_value=0, max_value=8))
        throttled = draw(st.integers(min_value=0, max_value=attempts))
        items.append(
            item.model_copy(
                update={
                    "attempts": attempts,
                    "throttled": throttled,
                    "throttled_since": 1_790_000_000.0 if throttled else None,
                    "replication_waited": draw(st.sampled_from([0.0, 10.0, 30.0])),
                }
            )
        )
    priority: WorkPriority = draw(st.sampled_from(["high", "normal", "low"]))
    messages = pack_work(parsed.job_id, parsed.correlation_id, items, priority=priority)
    message = draw(st.sampled_from(messages))
    return message.model_dump(by_alias=True, mode="json")


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@st.composite
def mutated_work_texts(draw: st.DrawFn) -> str:
    """A work message's text after one to three mutations a forger or a bug could make."""
    document = draw(work_documents())
    raw_counters: list[str] = []  # counters written as raw JSON text after dumping
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        items = document.get("items")
        action = draw(
            st.sampled_from(
                ["counter", "counter", "envelope", "operation", "structure", "extra", "missing", "generic"]
            )
        )
        in_items = (
            [i for i, item in enumerate(items) if isinstance(item, dict)] if isinstance(items, list) else []
        )
        if action == "counter" and isinstance(items, list) and in_items:
            at = draw(st.sampled_from(in_items))
            name = draw(st.sampled_from(COUNTERS))
            token = f"__raw{len(raw_counters)}__"
            raw_counters.append(draw(hostile_counters))
            items[at] = {**items[at], name: token}
        elif action == "envelope":
            name = draw(st.sampled_from(["kind", "jobId", "correlationId", "priority", "ticket"]))
            document[name] = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            "provisioning.work ",
                            "Provisioning.Work",
                            "urgent",
                            SECRET + "\n",
                            SECRET + "\ud800",
                            "../" + SECRET,
                            "q-" + "a" * 65,
                            "",
                        ]
                    ),
                    json_values,
                )
            )
        elif action == "operation" and isinstance(items, list) and items and isinstance(items[0], dict):
            operation = _as_dict(items[0].get("operation"))
            name = draw(st.sampled_from(["id", "method", "url", "headers", "body", "dependsOn"]))
            operation[name] = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            SECRET + "/x",
                            SECRET + "\ud800",
                            "FETCH",
                            f"https://{SECRET}.example/x",
                            {"Authorization": SECRET},
                            {SECRET + "\udc00": 1},
                            [SECRET],
                        ]
                    ),
                    json_values,
                )
            )
            items[0] = {**items[0], "operation": operation}
        elif action == "structure":
            document["items"] = draw(
                st.sampled_from(
                    [
                        [],
                        {},
                        None,
                        SECRET,
                        [None],
                        [[items]],
                        (items if isinstance(items, list) else []) * 3,
                        [{"operation": None}],
                    ]
                )
            )
        elif action == "extra":
            target = draw(st.sampled_from(["top", "item", "operation"]))
            if target == "top" or not (isinstance(items, list) and items and isinstance(items[0], dict)):
                document[SECRET] = SECRET
            elif target == "item":
                items[0] = {**items[0], SECRET: 1}
            else:
                items[0] = {
                    **items[0],
                    "operation": {**_as_dict(items[0].get("operation")), "password": SECRET},
                }
        elif action == "missing":
            name = draw(st.sampled_from(["jobId", "ticket", "items", "kind"]))
            document.pop(name, None)
        elif isinstance(items, list):  # anything else, anywhere in the items
            document["items"] = _mutate(draw, items)
        else:
            document = _mutate(draw, document)
            if not isinstance(document, dict):
                break
    text_form = _dumps(document)
    for index, raw in enumerate(raw_counters):
        text_form = text_form.replace(f'"__raw{index}__"', raw)
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # deeper than any document may nest
        text_form = text_form.replace('"body": {}', '"body": ' + "[" * 50 + "1" + "]" * 50, 1)
    return text_form


@FUZZ
@given(work_documents())
def test_a_work_message_the_app_wrote_reads_back_unchanged(document: dict[str, Any]) -> None:
    for message in (json.dumps(document), base64.b64encode(json.dumps(document).encode()).decode()):
        work = read_work_message(decode_queue_text(message))
        assert isinstance(work, WorkMessage)
        assert work.model_dump(by_alias=True, mode="json") == document


def _read_work(data: bytes) -> WorkMessage | list[Problem] | None:
    """`read_work_message`, its refusal as the problems it names."""
    try:
        return read_work_message(data)
    except MalformedWorkMessage as malformed:
        refused = malformed
    assert str(refused) == "; ".join(str(problem) for problem in refused.problems)
    return refused.problems


@FUZZ
@given(mutated_work_texts())
def test_a_mutated_work_message_is_read_whole_or_refused_naming_its_fields(text_form: str) -> None:
    for data in (text_form.encode("utf-8", "surrogatepass"), decode_queue_text(text_form)):
        read = _read_work(data)
        event("refused" if isinstance(read, list) else type(read).__name__)
        if isinstance(read, list):
            assert read
            for problem in read:
                assert FIELD.fullmatch(problem.field), problem
                assert problem.field.split(".")[0].split("[")[0] in WORK_ROOTS, problem
                assert problem.message
            _never_echoed(read)
        elif isinstance(read, WorkMessage):
            _check_work(read)
        else:
            # Not read as work: a document that says it is work but cannot even be read as
            # JSON (too deep, not UTF-8). Read as a job, it is refused all the same.
            document, _ = load_document(data)
            assert not (isinstance(document, dict) and document.get("kind") == "provisioning.work")
            outcome = parse_job(data)
            _check_outcome(outcome)
            if '"kind": "provisioning.work"' in text_form:
                assert isinstance(outcome, Rejection)


def _check_work(work: WorkMessage) -> None:
    """What the processor may rely on in a work message it reads: keys it can store, and
    counters within their bounds."""
    assert is_job_id(work.job_id)
    assert 1 <= len(work.items) <= MAX_ITEMS_PER_MESSAGE
    json.dumps(work.model_dump(by_alias=True, mode="json"), allow_nan=False).encode("utf-8")
    for item in work.items:
        assert is_row_key(item.operation.id)
        assert 0 <= item.attempts <= MAX_COUNTER
        assert 0 <= item.throttled <= MAX_COUNTER
        assert math.isfinite(item.replication_waited)
        assert 0 <= item.replication_waited <= MAX_WAIT_SECONDS
        assert item.throttled_since is None or (
            math.isfinite(item.throttled_since) and 0 <= item.throttled_since <= MAX_UNIX_TIME
        )
        assert item.seq is None or 0 <= item.seq <= MAX_SEQ


def _work_text(**counters: float) -> str:
    """A one-operation work message as the app writes it, with these counters."""
    item = {"operation": {"id": "a", "method": "GET", "url": "/users/a"}, **counters}
    return json.dumps({"kind": "provisioning.work", "jobId": "j", "ticket": "t1", "items": [item]})


@FUZZ
@given(mutated_work_texts())
@example(_work_text(attempts=0, throttled=9_999))
@example(_work_text(attempts=1, throttled=1, throttledSince=4_102_444_800))
def test_a_work_message_cannot_stretch_an_operations_retry_bounds(text_form: str) -> None:
    work = _read_work(text_form.encode("utf-8", "surrogatepass"))
    for item in work.items if isinstance(work, WorkMessage) else ():
        assert item.throttled <= item.attempts, "every 429 was one of the attempts"
        assert item.throttled_since is None or item.throttled_since <= time.time() + 600


@FUZZ
@given(mutated_work_texts())
@example(_work_text(attempts=9_999, throttled=9_999))
@example(_work_text(attempts=2_000, throttled=1_999))
def test_the_retry_arithmetic_takes_every_counter_a_work_message_may_carry(text_form: str) -> None:
    """The backoff the processor computes for an item it read, as it computes it."""
    work = _read_work(text_form.encode("utf-8", "surrogatepass"))
    policy = RetryPolicy(max_attempts=Settings().max_attempts)
    now = time.time()
    for item in work.items if isinstance(work, WorkMessage) else ():
        attempts = item.attempts + 1  # a 503, a 504 or no answer
        if not policy.exhausted(attempts - item.throttled):
            policy.delay(attempts, None)
        if not policy.waited_too_long(item.throttled_since or now, now):  # a 429
            policy.delay(item.throttled + 1, None)


# --- the HTTP door ----------------------------------------------------------------------------


class _DoorService:
    """Stands in for `ProvisioningService` at the HTTP door: the same intake (`parse_job`) and
    packing (`pack_work`) as `submit`, jobs kept in memory instead of Table storage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: dict[str, JobSummary] = {}
        self.callback_hosts = AllowedHosts.parse(settings.callback_allowed_hosts)

    async def submit(
        self,
        raw: bytes,
        *,
        base_url: str | None = None,
        callback_required: bool = False,
        **_: object,  # the service's other options do not change what intake accepts
    ) -> Accepted | Invalid | Conflict:
        hosts = self.callback_hosts if base_url is not None else None  # as the service does
        parsed = parse_job(raw, callback_hosts=hosts, callback_required=callback_required)
        if isinstance(parsed, Rejection):
            return Invalid(parsed.problems)
        try:
            pack_work(parsed.job_id, parsed.correlation_id, parsed.work_items(), priority="high")
        except WorkTooLarge as error:
            return Invalid([Problem("operations", str(error))], status=413)
        existing = self.jobs.get(parsed.job_id)
        if existing is not None:
            if existing.body_hash != parsed.body_hash:
                return Conflict(parsed.job_id)
            return Accepted(existing, created=False)
        summary = JobSummary(
            parsed.job_id, len(parsed.operations), parsed.body_hash, parsed.correlation_id, "http"
        )
        self.jobs[parsed.job_id] = summary
        return Accepted(summary, created=True)

    async def job(self, job_id: str) -> JobView | None:
        summary = self.jobs.get(job_id)
        return JobView(summary, []) if summary is not None else None


CALLER = "11111111-2222-3333-4444-555555555555"


def _principal_header(document: Any) -> str:
    return base64.b64encode(_dumps(document).encode("utf-8", "surrogatepass")).decode()


principal_headers = st.one_of(
    st.none(),
    text,
    st.builds(
        _principal_header,
        st.one_of(
            st.just({"claims": [{"typ": "appid", "val": CALLER}]}),
            st.builds(lambda claims: {"claims": claims}, json_values),
            st.builds(lambda value: {"claims": [{"typ": "oid", "val": value}]}, st.one_of(text, numbers)),
            json_values,
        ),
    ),
    st.just("e30" * 30_000),  # over the size a principal can have
)


@st.composite
def http_sequences(draw: st.DrawFn) -> list[bytes]:
    """What a flow posts: a job, then the same job again (a retried action), another body
    under its jobId, a dependency group too large for one queue message, or anything else."""
    first = {**draw(realistic_jobs()), "jobId": "fuzz-job"}
    key = "operations" if "operations" in first else "requests"
    bodies = [json.dumps(first).encode()]
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        follow = draw(st.sampled_from(["same", "other", "too-large", "any"]))
        if follow == "same":
            bodies.append(bodies[0])
        elif follow == "other":
            bodies.append(json.dumps({**first, key: first[key][:1], "correlationId": "other"}).encode())
        elif follow == "too-large":
            big = {
                "id": "big",
                "method": "PATCH",
                "url": "/users/a@contoso.com",
                "body": {"aboutMe": "x" * 46_000},
            }
            bodies.append(json.dumps({"operations": [big]}).encode())
        else:
            bodies.append(draw(http_bodies))
    return bodies


http_bodies = st.one_of(
    realistic_jobs().map(lambda d: json.dumps(d).encode()),
    mutated_realistic_jobs().map(lambda d: _dumps(d).encode("utf-8", "surrogatepass")),
    raw_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
)


def _check_answer(answer: func.HttpResponse, allowed: set[int]) -> None:
    assert answer.status_code in allowed, answer.status_code
    if answer.status_code >= 400:
        assert answer.mimetype == "application/problem+json"
        problem = json.loads(answer.get_body())
        assert problem["status"] == answer.status_code
        assert problem["errors"]
        for error in problem["errors"]:
            assert FIELD.fullmatch(error["field"]), error
            assert error["message"]
        assert SECRET.lower() not in answer.get_body().decode().lower()
        assert all(SECRET.lower() not in str(value).lower() for value in answer.headers.values())


@FUZZ
@given(
    st.one_of(st.lists(http_bodies, min_size=1, max_size=3), http_sequences()),
    principal_headers,
    st.booleans(),
    st.one_of(text, st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), st.just(SECRET)),
)
def test_the_http_door_answers_every_body_with_2xx_or_a_4xx_naming_fields(
    bodies: list[bytes], principal: str | None, restricted: bool, route_job_id: str
) -> None:
    """Posted bodies (one after another, so a jobId may be taken), a caller principal, and a
    status poll: never an exception, never a 5xx."""
    settings = Settings(allowed_caller_ids=CALLER if restricted else "")
    service = cast(ProvisioningService, _DoorService(settings))
    headers = {PRINCIPAL_HEADER: principal} if principal is not None else {}

    async def run() -> None:
        for body in bodies:
            request = func.HttpRequest(
                "POST",
                "https://app.example/api/jobs?code=key",
                headers=headers,
                params={"code": "key"},
                body=body,
            )
            answer = await http_api.post_job(request, service)
            event(f"POST {answer.status_code}")
            _check_answer(answer, {200, 202, 400, 403, 409, 413})
            if answer.status_code == 202:
                accepted = json.loads(answer.get_body())
                assert answer.headers["Location"] == accepted["statusUrl"]
                assert answer.headers["Location"].startswith("https://app.example/api/jobs/")
        poll = func.HttpRequest(
            "GET",
            "https://app.example/api/jobs/x",
            headers=headers,
            route_params={"jobId": route_job_id},
            body=b"",
        )
        _check_answer(await http_api.get_job(poll, service), {202, 400, 403, 404})

    asyncio.run(run())


def test_the_http_door_refuses_a_body_over_4_mib_naming_it() -> None:
    service = cast(ProvisioningService, _DoorService(Settings()))
    body = json.dumps({"operations": [], "x": SECRET * (5 * 1024 * 1024 // len(SECRET))}).encode()
    request = func.HttpRequest("POST", "https://app.example/api/jobs", headers={}, body=body)
    answer = asyncio.run(http_api.post_job(request, service))
    _check_answer(answer, {413})
    assert json.loads(answer.get_body())["errors"][0]["field"] == "body"
