"""Generated and mutated input through every intake entry point: never an exception other
than the documented one, every Rejection names a field, and every accepted job is safe to send.

The default run is short (FUZZ_EXAMPLES=300 per test) so the unit suite stays fast. The long run:

    FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/unit/test_fuzz_intake.py -q
"""

from __future__ import annotations

import base64
import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batching.allowlist import ALLOWED_OPERATIONS, header_problems, sendable_problems, url_as_sent
from batching.intake import MalformedWorkMessage, Rejection, decode_queue_text, parse_job, read_work_message
from batching.models import MAX_INT, MIN_INT, Job, WorkMessage, is_job_id, is_row_key
from batching.references import has_references

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

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
            assert problem.field
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
