from __future__ import annotations

import base64
import json

from batching.intake import Rejection, decode_queue_text, parse_job
from batching.models import Job


def _job(raw: object) -> Job:
    parsed = parse_job(json.dumps(raw))
    assert isinstance(parsed, Job), parsed
    return parsed


def _problems(raw: object | str) -> dict[str, str]:
    parsed = parse_job(raw if isinstance(raw, str) else json.dumps(raw))
    assert isinstance(parsed, Rejection)
    return {p.field: p.message for p in parsed.problems}


def test_graph_batch_body_numeric_ids_and_string_depends_on_are_normalised() -> None:
    job = _job(
        {
            "requests": [
                {"id": 2, "method": "get", "url": "users/a", "dependsOn": 1},
                {"id": 1, "method": "PATCH", "url": "/users/a", "body": {"city": "Oslo"}},
            ]
        }
    )
    assert [op.id for op in job.operations] == ["2", "1"]
    assert job.operations[0].method == "GET"
    assert job.operations[0].url == "/users/a"
    assert job.operations[0].depends_on == ("1",)


def test_writes_without_body_or_content_type_get_both() -> None:
    job = _job({"operations": [{"id": "d", "method": "DELETE", "url": "/users/a"}]})
    assert job.operations[0].body == {}
    assert job.operations[0].headers == {"Content-Type": "application/json"}


def test_reads_get_no_body_added() -> None:
    job = _job({"operations": [{"id": "g", "method": "GET", "url": "/users/a"}]})
    assert job.operations[0].body is None
    assert job.operations[0].headers == {}


def test_job_id_is_generated_when_absent_and_kept_when_given() -> None:
    assert _job({"operations": [{"id": "g", "method": "GET", "url": "/users/a"}]}).job_id
    given = {"jobId": "hr-2026.11_x", "operations": [{"id": "g", "method": "GET", "url": "/users/a"}]}
    assert _job(given).job_id == "hr-2026.11_x"


def test_every_bad_field_is_reported_at_once() -> None:
    problems = _problems(
        {
            "jobId": "bad id",
            "operations": [
                {"id": "a#1", "method": "FETCH", "url": "https://graph.microsoft.com/v1.0/users"},
                {"id": "b", "method": "GET", "url": "//evil.example/x", "surprise": 1},
            ],
        }
    )
    assert set(problems) == {
        "jobId",
        "operations[0].id",
        "operations[0].method",
        "operations[0].url",
        "operations[1].url",
        "operations[1].surprise",
    }
    assert problems["operations[1].surprise"] == "is not a known field"


def test_duplicate_ids_unknown_dependencies_and_self_dependency_are_named() -> None:
    problems = _problems(
        {
            "operations": [
                {"id": "a", "method": "GET", "url": "/users/a", "dependsOn": ["a"]},
                {"id": "A", "method": "GET", "url": "/users/a", "dependsOn": ["zz"]},
            ]
        }
    )
    assert "duplicate id" in problems["operations[1].id"]
    assert problems["operations[0].dependsOn[0]"] == "an operation cannot depend on itself"
    assert problems["operations[1].dependsOn[0]"] == "names no operation of this job"


def test_cycle_is_rejected_with_its_path() -> None:
    problems = _problems(
        {
            "operations": [
                {"id": "a", "method": "GET", "url": "/users/a", "dependsOn": "c"},
                {"id": "b", "method": "GET", "url": "/users/b", "dependsOn": "a"},
                {"id": "c", "method": "GET", "url": "/users/c", "dependsOn": "b"},
            ]
        }
    )
    assert list(problems.values()) == [
        "dependency cycle: operations[0] -> operations[2] -> operations[1] -> operations[0]"
    ]


def test_operations_outside_the_allow_list_are_rejected() -> None:
    problems = _problems({"operations": [{"id": "a", "method": "POST", "url": "/applications"}]})
    assert problems == {"operations[0].url": "POST /* is not an allowed operation"}


def test_app_owned_headers_and_version_prefixes_are_refused() -> None:
    problems = _problems(
        {
            "operations": [
                {
                    "id": "a",
                    "method": "GET",
                    "url": "/v1.0/users/a",
                    "headers": {"authorization": "Bearer x"},
                },
                {"id": "b", "method": "GET", "url": "/users/../applications"},
            ]
        }
    )
    assert "leave out the Graph version" in problems["operations[0].url"]
    assert problems["operations[0].headers"] == "header Authorization is set by the app and may not be given"
    assert "." in problems["operations[1].url"]


def test_bad_json_empty_body_and_non_object_bodies_are_explained() -> None:
    assert "not valid JSON" in _problems('{"operations": [')["body"]
    assert "empty" in _problems("  ")["body"]
    assert "JSON object" in _problems("[1, 2]")["body"]
    assert "UTF-8" in {p.field: p.message for p in parse_job(b"\xff\xfe").problems}["body"]  # type: ignore[union-attr]


def test_rejection_keeps_the_ids_it_could_read() -> None:
    parsed = parse_job(
        json.dumps({"jobId": "j1", "operations": [{"id": 7, "method": "NOPE", "url": "/users/a"}]})
    )
    assert isinstance(parsed, Rejection)
    assert parsed.job_id == "j1"
    assert parsed.operation_ids == ["7"]


def test_equivalent_spellings_hash_the_same() -> None:
    a = _job({"requests": [{"id": 1, "method": "patch", "url": "users/a", "body": {"x": 1}}]})
    b = _job(
        {
            "operations": [
                {
                    "id": "1",
                    "method": "PATCH",
                    "url": "/users/a",
                    "body": {"x": 1},
                    "headers": {"Content-Type": "application/json"},
                }
            ]
        }
    )
    assert a.body_hash == b.body_hash
    c = _job({"requests": [{"id": 1, "method": "patch", "url": "users/a", "body": {"x": 2}}]})
    assert c.body_hash != a.body_hash


def test_queue_text_is_read_as_plain_or_base64_json() -> None:
    text = '{"operations": []}'
    assert decode_queue_text(text) == text.encode()
    assert decode_queue_text(base64.b64encode(text.encode()).decode()) == text.encode()
    assert decode_queue_text("not json, not base64!") == b"not json, not base64!"
