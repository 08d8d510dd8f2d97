"""User-facing problems: every validation failure becomes a list of (field, message) pairs,
and a list of problems becomes one RFC 9457 problem document. This is the only place that
knows what pydantic's errors look like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by a JSON path such as `operations[2].url`."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# A field name shown as it is: an identifier. Anything else a caller wrote as a key (a header
# name, an unknown field with odd characters) is not echoed.
_SHOWN_NAME = re.compile(r"[A-Za-z_$@][A-Za-z0-9_]{0,63}")
# Inside these, locations are the caller's own keys: a problem names the field itself.
_OPAQUE_FIELDS = frozenset({"body", "headers"})
_MAX_MESSAGE = 300


def field_path(loc: tuple[int | str, ...], root: str = "") -> str:
    """`('operations', 2, 'url')` -> `operations[2].url`.

    Stops at `body` / `headers` (what follows are the caller's keys), and before any name
    that is not a plain identifier, so a location never carries a caller's text."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if not _SHOWN_NAME.fullmatch(part):
            break
        path = f"{path}.{part}" if path else part
        if part in _OPAQUE_FIELDS:
            break
    return path or "body"


def _without_input(message: str, value: Any) -> str:
    """A pydantic message with the input's text taken out, should it appear in it."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 6 and text in message:
            message = message.replace(text, "(the given value)")
    return message[:_MAX_MESSAGE]


def problems_from_validation(error: ValidationError) -> list[Problem]:
    """Pydantic's errors as problems, never echoing the input: only pydantic's message
    (with the input's text removed should it appear) or the app's own validator message."""
    problems: dict[tuple[str, str], None] = {}
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        where = field_path(loc)
        if item["type"] == "extra_forbidden":
            # the unknown name is shown only when it is a plain identifier
            shown = bool(loc) and where != field_path(loc[:-1])
            message = "is not a known field" if shown else "has a field that is not known"
        elif item["type"] == "value_error":  # the app's own validators: never echo a value
            message = item["msg"].removeprefix("Value error, ")
        else:
            message = _without_input(item["msg"], item.get("input"))
        problems[(where, message)] = None
    return [Problem(where, message) for where, message in problems]


def problem_document(problems: list[Problem], *, title: str, status: int) -> dict[str, Any]:
    """A problem+json body naming every bad field at once."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "; ".join(str(p) for p in problems),
        "errors": [{"field": p.field, "message": p.message} for p in problems],
    }
