"""What the result store reads to learn the state of a run's operations: a small job whole, a
bulk job only by key, however many of its operations one run holds. Real Azurite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from azure.data.tables.aio import TableClient

from batching.records import JobSummary, OperationOutcome, OperationStatus
from batching.store import ResultStore
from devhost.stack import Azurite


class _CountingTable(TableClient):
    """Table storage as it is, counting the entities its queries bring back."""

    entities_read = 0

    def query_entities(self, *args: Any, **kwargs: Any) -> Any:
        pages = super().query_entities(*args, **kwargs)

        async def counted() -> AsyncIterator[Any]:
            async for entity in pages:
                self.entities_read += 1
                yield entity

        return counted()


async def _store_with_job(azurite: Azurite, operations: int) -> tuple[ResultStore, _CountingTable, str]:
    name = f"Reads{uuid.uuid4().hex[:10]}"
    table = cast(_CountingTable, _CountingTable.from_connection_string(azurite.connection_string, name))
    store = ResultStore(table)
    await store.ensure_table()
    job_id = f"job-{operations}"
    rows = [
        OperationOutcome(
            op_id=f"op{n:06d}", status=OperationStatus.PENDING, method="PATCH", url="/users/x", seq=n
        )
        for n in range(operations)
    ]
    assert await store.create_job(JobSummary(job_id, operations, None, None, source="bulk"), rows)
    table.entities_read = 0
    return store, table, job_id


async def test_a_run_holding_600_operations_of_a_3000_row_bulk_job_reads_only_those_rows(
    azurite: Azurite,
) -> None:
    store, table, job_id = await _store_with_job(azurite, 3000)
    try:
        wanted = [f"op{n:06d}" for n in range(1200, 1800)]  # ten messages of 60
        states = await store.row_states(job_id, wanted)
        statuses = await store.statuses(job_id, wanted)
    finally:
        await store.close()
    assert set(states) == set(statuses) == set(wanted)
    assert all(state.status is OperationStatus.PENDING and state.etag for state in states.values())
    assert table.entities_read == 2 * len(wanted)  # the rows asked for (once each by two calls)


async def test_400_operations_of_a_submission_sized_job_are_read_with_the_whole_job(
    azurite: Azurite,
) -> None:
    store, table, job_id = await _store_with_job(azurite, 1000)
    try:
        wanted = [f"op{n:06d}" for n in range(400)]
        states = await store.row_states(job_id, wanted)
    finally:
        await store.close()
    assert set(states) == set(wanted)
    assert table.entities_read == 1000  # one streamed read of every row
