"""Rows the Table service always accepts, whatever Graph answered."""

from __future__ import annotations

import json

from batching.records import MAX_RESPONSE_BODY_CHARS, OperationOutcome, OperationStatus, utcnow
from batching.store import _transactions


def _entity(body: object, message: str = "") -> dict[str, object]:
    outcome = OperationOutcome(
        "op", OperationStatus.FAILED, "GET", "/users", 1, 400, body, "code", message, "req", seq=0
    )
    return outcome.to_entity("job", None, utcnow())


def test_astral_text_and_lone_surrogates_in_an_answer_are_stored_as_ascii_within_the_property_limit() -> None:
    entity = _entity(
        {"displayName": "\U0001f600" * 40_000 + "\ud800"}, "bad \ud800 text " + "\U0001f600" * 9_000
    )
    body = entity["ResponseBody"]
    assert isinstance(body, str)
    assert body.isascii()
    assert len(body) == MAX_RESPONSE_BODY_CHARS
    assert entity["ResponseBodyTruncated"] is True
    message = entity["ErrorMessage"]
    assert isinstance(message, str)
    message.encode("utf-8")  # no lone surrogate left
    assert len(message.encode("utf-16-le")) < 64 * 1024


def test_a_small_answer_reads_back_as_it_was() -> None:
    entity = _entity({"displayName": "Zoë \U0001f600"})
    assert json.loads(str(entity["ResponseBody"])) == {"displayName": "Zoë \U0001f600"}
    assert entity["ResponseBodyTruncated"] is False


def test_rows_with_large_answers_split_transactions_under_four_mebibytes() -> None:
    entities = [_entity({"aboutMe": "x" * 40_000}) for _ in range(100)]
    chunks = _transactions(entities)
    assert len(chunks) > 1
    assert sum(len(chunk) for chunk in chunks) == 100
    for chunk in chunks:
        assert sum(len(json.dumps(entity, default=str)) for entity in chunk) < 4 * 1024 * 1024
    assert len(_transactions([_entity(None) for _ in range(250)])) == 3
