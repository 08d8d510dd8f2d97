"""A bulk file's rows compared with Graph, in chunks, whichever way they are read.

`survey` reads the file once (results it will have, the properties it names, a manager
column); `compare` yields `Compared` chunks: by lookups, 300 rows at a time (one full `$batch`
of reads), several chunks read ahead; or by a scan of the tenant, with the file's rows spilled
to a SQLite file on disk and matched page by page, so memory does not grow with the tenant or
the file. Rows the scan never met are yielded last, not found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from batching.bulk.changes import RowPlan, plan_row
from batching.bulk.current import (
    CurrentUser,
    ReadPlan,
    Strategy,
    UserDirectory,
    choose,
    lookup_units,
)
from batching.bulk.reader import (
    BOOLEAN_PROPERTIES,
    MANAGER_COLUMN,
    TEXT_PROPERTIES,
    RowOperations,
    RowRejection,
    UnreadableFile,
    read_rows,
    row_operations,
)

CHUNK_ROWS: Final = 300  # 20 lookups of 15 users: one full $batch of reads
READ_AHEAD: Final = 4  # chunks whose reads are in flight at once
PAGES_AHEAD: Final = 20  # scanned pages held while earlier ones are recorded
_SQL_KEYS: Final = 400  # keys per `IN (...)` in the spill file

# Opens the file for one pass over it.
Opener = Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True, slots=True)
class FileSurvey:
    results: int  # one per operation and one per rejected row
    rows: int  # rows with operations
    properties: tuple[str, ...]
    manager: bool

    @property
    def select(self) -> tuple[str, ...]:
        return ("id", "userPrincipalName", *self.properties)


@dataclass(slots=True)
class Compared:
    plans: list[RowPlan] = field(default_factory=list)
    rejections: list[RowRejection] = field(default_factory=list)


def survey(open_file: Opener) -> FileSurvey:
    """One pass: what the file will produce and what must be read to compare it."""
    results = rows = 0
    properties: set[str] = set()
    manager = False
    with open_file() as stream:
        for row in read_rows(stream):
            if isinstance(row, RowRejection):
                results += 1
                continue
            rows += 1
            results += len(row.operations)
            properties.update(row.properties)
            manager = manager or row.manager is not None
    if results == 0:
        raise UnreadableFile("the file has a header but no data rows")
    known = sorted(name for name in properties if name in TEXT_PROPERTIES | BOOLEAN_PROPERTIES)
    return FileSurvey(results, rows, tuple(known), manager)


async def read_plan(directory: UserDirectory, file: FileSurvey) -> ReadPlan:
    """The cheaper way to read this file's users; the tenant is counted only when a scan
    could be cheaper than lookups at all."""
    tenant = await directory.count() if lookup_units(file.rows, manager=file.manager) > 2 else None
    return choose(file.rows, tenant, manager=file.manager, select=file.select)


async def compare(open_file: Opener, directory: UserDirectory, plan: ReadPlan) -> AsyncIterator[Compared]:
    """Every row of the file, compared, in chunks (rejections ride along)."""
    if plan.strategy is Strategy.SCAN:
        async for compared in _by_scan(open_file, directory, plan):
            yield compared
        return
    async for compared in _by_lookup(open_file, directory, plan):
        yield compared


async def _by_lookup(open_file: Opener, directory: UserDirectory, plan: ReadPlan) -> AsyncIterator[Compared]:
    in_flight: deque[asyncio.Task[Compared]] = deque()
    try:
        with open_file() as stream:
            for chunk in _chunks(read_rows(stream), CHUNK_ROWS):
                in_flight.append(asyncio.create_task(_look_up(chunk, directory, plan)))
                if len(in_flight) >= READ_AHEAD:
                    yield await in_flight.popleft()
        while in_flight:
            yield await in_flight.popleft()
    finally:
        for task in in_flight:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*in_flight, return_exceptions=True)


async def _look_up(
    chunk: list[RowOperations | RowRejection], directory: UserDirectory, plan: ReadPlan
) -> Compared:
    rows = [row for row in chunk if isinstance(row, RowOperations)]
    found = await directory.lookup(
        ((row.key_column, row.user) for row in rows), plan.select, manager=plan.manager
    )
    return Compared(
        [plan_row(row, found.get(row.user.lower())) for row in rows],
        [row for row in chunk if isinstance(row, RowRejection)],
    )


async def _by_scan(open_file: Opener, directory: UserDirectory, plan: ReadPlan) -> AsyncIterator[Compared]:
    with tempfile.TemporaryDirectory(prefix="bulk-scan-") as folder:
        spill = _Spill(Path(folder) / "rows.sqlite")
        try:
            with open_file() as stream:
                for chunk in _chunks(read_rows(stream), CHUNK_ROWS):
                    rejections = spill.add(chunk)
                    if rejections:
                        yield Compared([], rejections)
            # Pages are fetched ahead while earlier ones are recorded; matched rows are handed on
            # a chunk at a time, so each recording is a few full transactions.
            pages: asyncio.Queue[list[CurrentUser] | None] = asyncio.Queue(maxsize=PAGES_AHEAD)
            reading = asyncio.create_task(_read_pages(directory, plan, pages))
            try:
                compared = Compared()
                while (users := await _next_page(pages, reading)) is not None:
                    by_key = {key: user for user in users for key in user.keys}
                    compared.plans.extend(
                        plan_row(row, by_key[row.user.lower()]) for row in spill.take(by_key)
                    )
                    if len(compared.plans) >= CHUNK_ROWS:
                        yield compared
                        compared = Compared()
                if compared.plans:
                    yield compared
            finally:
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
            for rows in spill.left():
                yield Compared([plan_row(row, None) for row in rows])
        finally:
            spill.close()


async def _read_pages(
    directory: UserDirectory, plan: ReadPlan, pages: asyncio.Queue[list[CurrentUser] | None]
) -> None:
    async for users in directory.scan(plan.select, manager=plan.manager):
        await pages.put(users)
    await pages.put(None)


async def _next_page(
    pages: asyncio.Queue[list[CurrentUser] | None], reading: asyncio.Task[None]
) -> list[CurrentUser] | None:
    """The next page, None after the last; what the reader raised, once it failed."""
    getter = asyncio.ensure_future(pages.get())
    await asyncio.wait({getter, reading}, return_when=asyncio.FIRST_COMPLETED)
    if not getter.done() and (error := reading.exception()) is not None:
        getter.cancel()
        raise error
    return await getter


class _Spill:
    """The file's rows on disk, by lower-case key, until the scan meets their user."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE rows (key TEXT PRIMARY KEY, data TEXT NOT NULL, seen INTEGER DEFAULT 0)"
        )

    def add(self, chunk: list[RowOperations | RowRejection]) -> list[RowRejection]:
        self._db.executemany(
            "INSERT OR IGNORE INTO rows (key, data) VALUES (?, ?)",
            [(row.user.lower(), _dump(row)) for row in chunk if isinstance(row, RowOperations)],
        )
        return [row for row in chunk if isinstance(row, RowRejection)]

    def take(self, by_key: Mapping[str, object]) -> list[RowOperations]:
        keys = list(by_key)
        rows: list[RowOperations] = []
        for start in range(0, len(keys), _SQL_KEYS):
            part = keys[start : start + _SQL_KEYS]
            query = f"SELECT key, data FROM rows WHERE seen = 0 AND key IN ({','.join('?' * len(part))})"  # noqa: S608 (placeholders only)
            found = self._db.execute(query, part).fetchall()
            self._db.executemany("UPDATE rows SET seen = 1 WHERE key = ?", [(key,) for key, _ in found])
            rows.extend(_load(data) for _, data in found)
        return rows

    def left(self) -> Iterator[list[RowOperations]]:
        cursor = self._db.execute("SELECT data FROM rows WHERE seen = 0")
        while batch := cursor.fetchmany(CHUNK_ROWS):
            yield [_load(data) for (data,) in batch]

    def close(self) -> None:
        self._db.close()


def _dump(row: RowOperations) -> str:
    return json.dumps([row.line, row.user, row.key_column, dict(row.properties), row.manager])


def _load(data: str) -> RowOperations:
    line, user, key_column, properties, manager = json.loads(data)
    return row_operations(line, user, key_column, properties, manager)


def _chunks(
    rows: Iterable[RowOperations | RowRejection], size: int
) -> Iterator[list[RowOperations | RowRejection]]:
    chunk: list[RowOperations | RowRejection] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__ = ["MANAGER_COLUMN", "Compared", "FileSurvey", "compare", "read_plan", "survey"]
