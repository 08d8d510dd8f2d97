"""User-facing problems: every validation failure becomes a list of (field, message) pairs,
and a list of problems becomes one RFC 9457 problem document. This is the only place that
knows what pydantic's errors look like.
"""

from __future__ import annotations

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


def field_path(loc: tuple[int | str, ...], root: str = "") -> str:
    """`('operations', 2, 'url')` -> `operations[2].url`."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "body"


def problems_from_validation(error: ValidationError) -> list[Problem]:
    """Pydantic's errors as problems, without echoing the (possibly large) input."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "is not a known field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(Problem(field_path(tuple(item["loc"])), message))
    return problems


def problem_document(problems: list[Problem], *, title: str, status: int) -> dict[str, Any]:
    """A problem+json body naming every bad field at once."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "; ".join(str(p) for p in problems),
        "errors": [{"field": p.field, "message": p.message} for p in problems],
    }
