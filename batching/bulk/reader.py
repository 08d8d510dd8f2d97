"""Bulk user updates from CSV: each row becomes operations of one job, read as a stream.

A row names a user by `id` or `userPrincipalName`; every other column is a user property.
An empty cell leaves the property unchanged; `#clear` (any case) clears it. `manager` (a UPN or
id) becomes `PUT /users/{user}/manager/$ref` (`#clear`: `DELETE .../manager/$ref`).
Files are UTF-8 with or without BOM, comma or semicolon separated (taken from the header).
A bad row is a `RowRejection` naming its line and column; the other rows still run.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Final
from urllib.parse import quote

from pydantic import JsonValue

from batching.models import Operation

CLEAR_MARKER: Final = "#clear"
KEY_COLUMNS: Final = ("id", "userPrincipalName")
MANAGER_COLUMN: Final = "manager"
TEXT_PROPERTIES: Final = frozenset(
    {
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "officeLocation",
        "usageLocation",
        "companyName",
        "employeeId",
        "employeeType",
        "mobilePhone",
        "city",
        "state",
        "country",
        "streetAddress",
        "postalCode",
        "preferredLanguage",
        "mail",
    }
)
BOOLEAN_PROPERTIES: Final = frozenset({"accountEnabled"})
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})
_GRAPH_USERS: Final = "https://graph.microsoft.com/v1.0/users/"


class UnreadableFile(ValueError):
    """The file as a whole cannot be applied (no header, no key column, not UTF-8)."""


@dataclass(frozen=True, slots=True)
class RowOperations:
    """A row's operations, and what it asks for (compared with Graph before anything is sent)."""

    line: int
    user: str
    operations: tuple[Operation, ...]
    key_column: str = "userPrincipalName"  # or "id": what `user` is
    properties: Mapping[str, JsonValue] = field(default_factory=dict)  # None: clear it
    manager: str | None = None  # a UPN or id, `#clear`, or None when the cell is empty

    @property
    def clears_manager(self) -> bool:
        return self.manager is not None and self.manager.lower() == CLEAR_MARKER


@dataclass(frozen=True, slots=True)
class RowRejection:
    line: int
    column: str
    message: str

    @property
    def op_id(self) -> str:
        return f"line-{self.line}"

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


def content_hash(stream: IO[bytes], chunk_size: int = 1 << 16) -> str:
    """SHA-256 of the whole file, read in chunks (the same content is the same job)."""
    digest = hashlib.sha256()
    while chunk := stream.read(chunk_size):
        digest.update(chunk)
    return digest.hexdigest()


def bulk_job_id(sha256_hex: str) -> str:
    """The job id of a file's content, whatever the file is called."""
    return f"bulk-{sha256_hex[:40]}"


def read_rows(stream: IO[bytes]) -> Iterator[RowOperations | RowRejection]:
    """Operations per CSV row, one row at a time (memory does not grow with the file)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="", errors="strict")
    try:
        yield from _read_text(text)
    finally:
        text.detach()  # the caller's stream stays open (and is the caller's to close)


def _read_text(text: io.TextIOWrapper) -> Iterator[RowOperations | RowRejection]:
    try:
        header_line = text.readline()
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"not UTF-8 text: {error.reason}") from error
    if not header_line.strip():
        raise UnreadableFile("the file is empty or has no header row")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    header = [name.strip() for name in next(csv.reader([header_line], delimiter=delimiter))]
    _check_header(header)
    seen: dict[str, int] = {}
    reader = csv.reader(text, delimiter=delimiter)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            raise UnreadableFile(f"not UTF-8 text after line {line}: {error.reason}") from error
        line = reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        yield _row(line, header, cells, seen)


def _check_header(header: list[str]) -> None:
    if not any(name in KEY_COLUMNS for name in header):
        raise UnreadableFile("the header needs an 'id' or 'userPrincipalName' column")
    duplicates = {name for name in header if header.count(name) > 1}
    if duplicates:
        raise UnreadableFile(f"the header repeats {', '.join(sorted(duplicates))}")


def _row(
    line: int, header: list[str], cells: list[str], seen: dict[str, int]
) -> RowOperations | RowRejection:
    if len(cells) > len(header):
        return RowRejection(line, f"#{len(header) + 1}", "more cells than the header has columns")
    values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)}
    user = values.get("id") or values.get("userPrincipalName") or ""
    if not user:
        return RowRejection(line, "id/userPrincipalName", "no user: both key cells are empty")
    if user.lower() in seen:
        return RowRejection(
            line,
            "id" if values.get("id") else "userPrincipalName",
            f"user {user!r} is already on line {seen[user.lower()]}",
        )
    body: dict[str, JsonValue] = {}
    manager: str | None = None
    for name, value in values.items():
        if name in KEY_COLUMNS or not value:
            continue
        cleared = value.lower() == CLEAR_MARKER
        if name == MANAGER_COLUMN:
            manager = value
        elif name in BOOLEAN_PROPERTIES:
            if value.lower() not in _TRUE | _FALSE:
                return RowRejection(line, name, "is not a boolean (true/false, yes/no, 1/0)")
            body[name] = value.lower() in _TRUE
        elif name in TEXT_PROPERTIES:
            body[name] = None if cleared else value
        else:
            return RowRejection(line, name, "is not a user property this import can set")
    seen[user.lower()] = line
    if not body and manager is None:
        return RowRejection(line, "*", "nothing to change: every property cell is empty")
    return row_operations(line, user, "id" if values.get("id") else "userPrincipalName", body, manager)


def row_operations(
    line: int, user: str, key_column: str, properties: dict[str, JsonValue], manager: str | None
) -> RowOperations:
    """A row's operations: `PATCH` with its properties, and the manager's `$ref` when named."""
    target = f"/users/{quote(user, safe='@')}"
    operations = []
    if properties:
        operations.append(
            Operation(
                id=f"line-{line}",
                method="PATCH",
                url=target,
                headers={"Content-Type": "application/json"},
                body=properties,
            )
        )
    if manager is not None:
        clear = manager.lower() == CLEAR_MARKER
        ref: JsonValue = {} if clear else {"@odata.id": _GRAPH_USERS + quote(manager, safe="@")}
        operations.append(
            Operation(
                id=f"line-{line}-manager",
                method="DELETE" if clear else "PUT",
                url=f"{target}/manager/$ref",
                headers={"Content-Type": "application/json"},
                body=ref,
            )
        )
    return RowOperations(line, user, tuple(operations), key_column, properties, manager)
