"""Output references: `{{opId.path}}` in an operation's url, headers or body, resolved from the
JSON response of operation `opId` in the same job (`{{group.id}}`, `{{lookup.value.0.id}}`).

Graph cannot pass values between batch items; this is how a job chains create -> use.
A string that is exactly one reference takes the referenced JSON value as is; a reference
inside a longer string is replaced by its text (URL-encoded inside a url).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

from pydantic import JsonValue

from batching.models import Operation

REFERENCE: Final = re.compile(r"\{\{\s*([^.{}\s]+)((?:\.[^.{}\s]+)*)\s*\}\}")
_URL_SAFE: Final = "@'!$&()*+,;=:~-._"


class UnresolvedReference(ValueError):
    """A reference whose operation has no usable response, or whose path is not in it."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def referenced_ids(url: str, headers: Mapping[str, str], body: Any) -> list[str]:
    """Operation ids referenced anywhere in an operation, in order of appearance."""
    found: dict[str, None] = {}
    for text in _strings([url, dict(headers), body]):
        for match in REFERENCE.finditer(text):
            found[match.group(1)] = None
    return list(found)


def has_references(operation: Operation) -> bool:
    return bool(referenced_ids(operation.url, operation.headers, operation.body))


def resolve(operation: Operation, outputs: Mapping[str, JsonValue]) -> Operation:
    """The operation with every reference replaced; raises UnresolvedReference naming it."""
    url = _substitute_text(operation.url, outputs, encode=True)
    headers = {key: _substitute_text(value, outputs) for key, value in operation.headers.items()}
    return operation.model_copy(
        update={"url": url, "headers": headers, "body": _substitute_value(operation.body, outputs)}
    )


def _lookup(match: re.Match[str], outputs: Mapping[str, JsonValue]) -> JsonValue:
    op_id, path = match.group(1), match.group(2)
    if op_id not in outputs:
        raise UnresolvedReference(f"{match.group(0)}: operation {op_id!r} has no response to read")
    value: JsonValue = outputs[op_id]
    walked = op_id
    for part in filter(None, path.split(".")):
        walked += f".{part}"
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise UnresolvedReference(f"{match.group(0)}: {walked!r} is not in the response of {op_id!r}")
    if value is None:
        raise UnresolvedReference(f"{match.group(0)}: {walked!r} is null in the response of {op_id!r}")
    return value


def _substitute_text(text: str, outputs: Mapping[str, JsonValue], *, encode: bool = False) -> str:
    def replace(match: re.Match[str]) -> str:
        value = _lookup(match, outputs)
        if isinstance(value, (dict, list)):
            raise UnresolvedReference(f"{match.group(0)}: is an object, not text")
        text_value = str(value).lower() if isinstance(value, bool) else str(value)
        return quote(text_value, safe=_URL_SAFE) if encode else text_value

    return REFERENCE.sub(replace, text)


def _substitute_value(value: JsonValue, outputs: Mapping[str, JsonValue]) -> JsonValue:
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        return _lookup(whole, outputs) if whole else _substitute_text(value, outputs)
    if isinstance(value, dict):
        return {_substitute_text(k, outputs): _substitute_value(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_value(item, outputs) for item in value]
    return value
