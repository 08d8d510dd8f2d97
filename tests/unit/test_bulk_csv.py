from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator

import pytest

from batching.bulk.reader import (
    RowOperations,
    RowRejection,
    UnreadableFile,
    bulk_job_id,
    content_hash,
    read_rows,
)


def _read(text: str, encoding: str = "utf-8") -> list[RowOperations | RowRejection]:
    return list(read_rows(io.BytesIO(text.encode(encoding))))


def test_rows_become_patches_with_empty_cells_left_alone_and_clear_marker_as_null() -> None:
    rows = _read("userPrincipalName,jobTitle,department,city\nada@contoso.com,Engineer,,#CLEAR\n")
    assert isinstance(rows[0], RowOperations)
    (patch,) = rows[0].operations
    assert (patch.id, patch.method, patch.url) == ("line-2", "PATCH", "/users/ada@contoso.com")
    assert patch.body == {"jobTitle": "Engineer", "city": None}


def test_semicolons_and_a_bom_are_understood() -> None:
    rows = _read("\ufeffid;accountEnabled;officeLocation\n1b2c;no;HQ 3\n")
    assert isinstance(rows[0], RowOperations)
    assert rows[0].operations[0].body == {"accountEnabled": False, "officeLocation": "HQ 3"}


def test_manager_becomes_a_ref_operation_and_can_be_cleared() -> None:
    rows = _read("userPrincipalName,manager\na@contoso.com,boss@contoso.com\nb@contoso.com,#clear\n")
    assert isinstance(rows[0], RowOperations)
    assert isinstance(rows[1], RowOperations)
    put = rows[0].operations[0]
    assert (put.method, put.url) == ("PUT", "/users/a@contoso.com/manager/$ref")
    assert put.body == {"@odata.id": "https://graph.microsoft.com/v1.0/users/boss@contoso.com"}
    assert rows[1].operations[0].method == "DELETE"


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("c@contoso.com,maybe,", "accountEnabled", "not a boolean"),
        (",true,", "id/userPrincipalName", "no user"),
        ("c@contoso.com,true,x,extra", "#4", "more cells"),
        ("a@contoso.com,true,", "userPrincipalName", "already on line 2"),
    ],
)
def test_bad_rows_are_rejected_naming_line_and_column(row: str, column: str, words: str) -> None:
    rows = _read(f"userPrincipalName,accountEnabled,jobTitle\na@contoso.com,true,\n{row}\n")
    assert isinstance(rows[0], RowOperations)
    rejection = rows[1]
    assert isinstance(rejection, RowRejection)
    assert (rejection.line, rejection.column) == (3, column)
    assert words in rejection.message


def test_unknown_column_rejects_the_rows_that_use_it() -> None:
    rows = _read("userPrincipalName,favouriteColour\na@contoso.com,blue\nb@contoso.com,\n")
    assert isinstance(rows[0], RowRejection)
    assert rows[0].column == "favouriteColour"
    assert isinstance(rows[1], RowRejection)
    assert "nothing to change" in rows[1].message


@pytest.mark.parametrize(
    "data", [b"", b"jobTitle,city\nx,y\n", b"id,id\n1,2\n", b"id,jobTitle\n1,\xff\xfe\n"]
)
def test_unreadable_files_are_refused_whole(data: bytes) -> None:
    with pytest.raises(UnreadableFile):
        list(read_rows(io.BytesIO(data)))


def test_same_content_is_the_same_job_whatever_the_name() -> None:
    data = b"id,jobTitle\n1,x\n"
    assert bulk_job_id(content_hash(io.BytesIO(data))) == bulk_job_id(content_hash(io.BytesIO(data)))
    assert bulk_job_id(content_hash(io.BytesIO(data + b"2,y\n"))) != bulk_job_id(
        content_hash(io.BytesIO(data))
    )


class _GeneratedCsv(io.RawIOBase):
    """A 100,000-row CSV produced on the fly, so the test itself holds no copy of it."""

    def __init__(self, rows: int) -> None:
        self._lines: Iterator[bytes] = (
            b"userPrincipalName,jobTitle,department\n"
            if n == 0
            else f"user{n}@contoso.com,Title {n},Dept\n".encode()
            for n in range(rows + 1)
        )
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while len(self._pending) < len(buffer):
            line = next(self._lines, None)
            if line is None:
                break
            self._pending += line
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def test_a_100000_row_file_is_read_as_a_stream() -> None:
    tracemalloc.start()
    count = 0
    for row in read_rows(io.BufferedReader(_GeneratedCsv(100_000))):
        assert isinstance(row, RowOperations)
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 100_000
    # the rows are yielded one at a time; only the duplicate-user index grows with the file
    assert peak < 25 * 1024 * 1024, peak
    print(f"100,000 rows read with a traced peak of {peak / 1024 / 1024:.1f} MiB")


def test_parts_hold_exactly_60_operations_so_every_batch_is_full() -> None:
    from batching.bulk.pickup import PART_OPERATIONS, _parts, count_rows

    lines = ["userPrincipalName,jobTitle,manager"]
    lines += [f"u{n}@contoso.com,T,boss@contoso.com" for n in range(1, 71)]  # 2 operations a row
    lines += ["u1@contoso.com,again,"]  # a duplicate: a rejection, not an operation
    data = ("\n".join(lines) + "\n").encode()

    parts = list(_parts(read_rows(io.BytesIO(data))))

    assert PART_OPERATIONS % 20 == 0
    assert [len(part.operations) for part in parts] == [60, 60, 20]
    assert [len(part.rejections) for part in parts] == [0, 0, 1]
    assert count_rows(lambda: io.BytesIO(data)) == 141
