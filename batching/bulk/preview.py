"""A preview (dry run) of a bulk file: what it would change, read from Graph, nothing written.

Two documents, written as the comparison streams (memory does not grow with the file):

- `<name>.preview.csv`: one line per property that would change (`line, user, result,
  property, current, new, message`), one per user the read did not find (its row would be
  sent as it is), one per rejected row (the column and why);
- `<name>.preview.json`: the counts, how the users were read, and the same content as lists.

Unchanged users are only counted. Values are shown as Graph returned them and as the file
would set them; "(empty)" is no value (a cleared property, or none set).
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from pydantic import JsonValue

from batching.bulk.changes import RowPlan
from batching.bulk.comparison import Opener, compare, read_plan, survey
from batching.bulk.current import ReadPlan, UserDirectory
from batching.bulk.reader import RowRejection
from batching.records import utcnow

EMPTY: Final = "(empty)"
CSV_COLUMNS: Final = ("line", "user", "result", "property", "current", "new", "message")
SAMPLE_ROWS: Final = 50


@dataclass(slots=True)
class PreviewCounts:
    rows: int = 0
    changed: int = 0
    unchanged: int = 0
    not_found: int = 0
    rejected: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "notFound": self.not_found,
            "rejected": self.rejected,
        }


@dataclass(slots=True)
class PreviewResult:
    counts: PreviewCounts
    plan: ReadPlan
    sample: list[RowPlan] = field(default_factory=list)  # the first changed rows, for a table
    changed_users: int = 0


async def write_preview(
    open_file: Opener,
    directory: UserDirectory,
    *,
    name: str,
    sha256: str,
    csv_out: IO[str],
    json_out: IO[str],
) -> PreviewResult:
    """Compare the file with Graph and write both documents; raises UnreadableFile or
    ReadFailed as an import would (nothing is written to Graph either way)."""
    file = survey(open_file)
    plan = await read_plan(directory, file)
    result = PreviewResult(PreviewCounts(), plan)
    table = csv.writer(csv_out, lineterminator="\r\n")
    table.writerow(CSV_COLUMNS)
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as changes,
        tempfile.TemporaryFile("w+", encoding="utf-8") as missing,
        tempfile.TemporaryFile("w+", encoding="utf-8") as rejections,
    ):
        async for compared in compare(open_file, directory, plan):
            for rejection in compared.rejections:
                result.counts.rejected += 1
                table.writerow((rejection.line, "", "rejected", rejection.column, "", "", rejection.message))
                rejections.write(json.dumps(_rejection_json(rejection)) + "\n")
            for row_plan in compared.plans:
                _count(result, row_plan, table, changes, missing)
        json_out.write("{")
        header = {
            "file": name,
            "sha256": sha256,
            "writtenAt": utcnow().isoformat(),
            "read": {
                "strategy": plan.strategy.value,
                "resourceUnits": plan.units,
                "tenantUsers": plan.tenant_users,
            },
            "counts": result.counts.to_json(),
        }
        json_out.write(", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in header.items()))
        for key, lines in (("changes", changes), ("notFound", missing), ("rejections", rejections)):
            json_out.write(f", {json.dumps(key)}: [")
            json_out.write(", ".join(line.rstrip("\n") for line in _lines(lines)))
            json_out.write("]")
        json_out.write("}\n")
    return result


def _count(result: PreviewResult, row_plan: RowPlan, table: Any, changes: IO[str], missing: IO[str]) -> None:
    row = row_plan.row
    result.counts.rows += 1
    if not row_plan.found:
        result.counts.not_found += 1
        table.writerow(
            (row.line, row.user, "not found", "", "", "", "not compared: the row would be sent as it is")
        )
        missing.write(json.dumps({"line": row.line, "user": row.user}) + "\n")
        return
    if not row_plan.changes:
        result.counts.unchanged += 1
        return
    result.counts.changed += 1
    if len(result.sample) < SAMPLE_ROWS:
        result.sample.append(row_plan)
    for change in row_plan.changes:
        table.writerow(
            (row.line, row.user, "changed", change.name, shown(change.current), shown(change.new), "")
        )
    document = {
        "line": row.line,
        "user": row.user,
        "properties": {
            change.name: {"current": change.current, "new": change.new} for change in row_plan.changes
        },
    }
    changes.write(json.dumps(document) + "\n")


def shown(value: JsonValue) -> str:
    """A value as an admin reads it in the CSV."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _rejection_json(rejection: RowRejection) -> dict[str, Any]:
    return {"line": rejection.line, "column": rejection.column, "message": rejection.message}


def _lines(stream: IO[str]) -> Iterator[str]:
    stream.seek(0)
    yield from stream
