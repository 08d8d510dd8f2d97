"""Output references: `{{opId.path}}` in an operation's url, headers or body, resolved from the
JSON response of operation `opId` in the same job (`{{group.id}}`, `{{lookup.value.0.id}}`).

Graph cannot pass values between batch items; this is how a job chains create -> use.
A string that is exactly one reference takes the referenced JSON value as is; a reference
inside a longer string is replaced by its text, made safe for where it lands:

- in the URL path: percent-encoded as one segment (a `/` in the value is `%2F`, never a new
  segment); a value that cannot be one segment (empty, `.`, `..`, or holding `/ \\ %` or
  control characters) fails the operation instead;
- in the URL query, inside a quoted OData string (`$filter=mail eq '{{x.mail}}'`): quotes
  doubled (`O'Brien` -> `O''Brien`), then every reserved character percent-encoded;
- in the URL query outside a quoted string (`$filter=id eq {{x.id}}`): only a plain id,
  number or word is inserted; anything else would change the query and fails the operation;
- in a header: the result must still be printable ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

from pydantic import JsonValue

from batching.allowlist import ALLOWED_HEADERS, REFERENCE, header_value_problem
from batching.models import Operation

__all__ = ["REFERENCE", "UnresolvedReference", "has_references", "referenced_ids", "resolve"]

# Characters a path segment keeps as they are (RFC 3986 sub-delims, ':' and '@'); `quote`
# keeps letters, digits and `-._~` too, and encodes everything else, `/` included.
_SEGMENT_SAFE: Final = "!$&'()*+,;=:@"
# A value inserted into the query outside a quoted string: an id, number, boolean or date.
_PLAIN_QUERY_VALUE: Final = re.compile(r"[A-Za-z0-9._~:-]+")
_QUOTE: Final = re.compile(r"'|%27", re.IGNORECASE)
_UNSAFE_IN_SEGMENT: Final = re.compile(r"[/\\%\x00-\x1f\x7f-\x9f]")


class UnresolvedReference(ValueError):
    """A reference whose operation has no usable response, or whose path is not in it."""


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included (iterative: any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                stack.append(child)
                stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))


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
    url = _substitute_url(operation.url, outputs)
    headers = {name: _substitute_header(name, value, outputs) for name, value in operation.headers.items()}
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


def _text(match: re.Match[str], outputs: Mapping[str, JsonValue]) -> str:
    value = _lookup(match, outputs)
    if isinstance(value, (dict, list)):
        raise UnresolvedReference(f"{match.group(0)}: is an object, not text")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _encode(match: re.Match[str], text: str, safe: str) -> str:
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        raise UnresolvedReference(f"{match.group(0)}: the value is not Unicode text") from None


def _substitute_url(url: str, outputs: Mapping[str, JsonValue]) -> str:
    """Replace references in a URL, each encoded for the part of the URL it lands in."""
    out: list[str] = []
    own_text = ""  # the URL's own text so far, references left out
    last = 0
    for match in REFERENCE.finditer(url):
        before = url[last : match.start()]
        out.append(before)
        own_text += before
        text = _text(match, outputs)
        if "?" in own_text:
            query = own_text.split("?", 1)[1]
            if len(_QUOTE.findall(query)) % 2 == 1:  # inside a quoted OData string
                out.append(_encode(match, text.replace("'", "''"), safe=""))
            elif _PLAIN_QUERY_VALUE.fullmatch(text):
                out.append(text)
            else:
                raise UnresolvedReference(
                    f"{match.group(0)}: outside a quoted string in the query only a plain id, number "
                    f"or word can be inserted; quote it: '{match.group(0)}'"
                )
        else:
            whole_segment = before.endswith("/") and url[match.end() : match.end() + 1] in {"", "/", "?"}
            if _UNSAFE_IN_SEGMENT.search(text) or (whole_segment and text in {"", ".", ".."}):
                raise UnresolvedReference(
                    f"{match.group(0)}: the value cannot be a URL path segment "
                    "(it is empty, . or .., or holds / \\ % or control characters)"
                )
            out.append(_encode(match, text, safe=_SEGMENT_SAFE))
        last = match.end()
    out.append(url[last:])
    return "".join(out)


def _substitute_header(name: str, value: str, outputs: Mapping[str, JsonValue]) -> str:
    resolved = _substitute_text(value, outputs)
    if resolved != value:
        problem = header_value_problem(ALLOWED_HEADERS.get(name.lower(), "the header"), resolved)
        if problem:
            raise UnresolvedReference(f"a referenced value cannot be sent in a header: {problem}")
    return resolved


def _substitute_text(text: str, outputs: Mapping[str, JsonValue]) -> str:
    return REFERENCE.sub(lambda match: _text(match, outputs), text)


def _substitute_value(value: JsonValue, outputs: Mapping[str, JsonValue]) -> JsonValue:
    """References in a body replaced. Recursive, over a body whose depth intake bounds
    (`MAX_BODY_DEPTH`); the values put in are never walked."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        return _lookup(whole, outputs) if whole else _substitute_text(value, outputs)
    if isinstance(value, dict):
        return {_substitute_text(k, outputs): _substitute_value(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_value(item, outputs) for item in value]
    return value
