"""ResultStore: every operation's row and each job's summary row in Table storage.

Rows are upserted (merge), so the same outcome written twice is still one row; writes for one
job go in entity-group transactions of up to 100.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient
from pydantic import JsonValue

from batching.records import (
    SUMMARY_ROW_KEY,
    JobSummary,
    OperationOutcome,
    OperationRecord,
    OperationStatus,
    utcnow,
)

MAX_TRANSACTION: Final = 100
_SUMMARY_RETRIES: Final = 10


class ResultStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self._table.create_table()

    async def close(self) -> None:
        await self._table.close()

    async def get_summary(self, job_id: str) -> JobSummary | None:
        try:
            entity = await self._table.get_entity(job_id, SUMMARY_ROW_KEY)
        except ResourceNotFoundError:
            return None
        return JobSummary.from_entity(dict(entity), entity.metadata.get("etag"))

    async def create_job(self, summary: JobSummary, rows: Sequence[OperationOutcome]) -> bool:
        """Insert the summary, then the rows; False when the job already existed."""
        summary.counts = dict(Counter(row.status for row in rows))
        try:
            await self._table.create_entity(summary.to_entity(utcnow()))
        except ResourceExistsError:
            return False
        await self.record(summary.job_id, summary.correlation_id, rows)
        return True

    async def mark_enqueued(self, job_id: str) -> None:
        await self._table.upsert_entity(
            {"PartitionKey": job_id, "RowKey": SUMMARY_ROW_KEY, "Enqueued": True, "UpdatedAt": utcnow()},
            mode=UpdateMode.MERGE,
        )

    async def record(
        self, job_id: str, correlation_id: str | None, outcomes: Iterable[OperationOutcome]
    ) -> None:
        now = utcnow()
        entities = [outcome.to_entity(job_id, correlation_id, now) for outcome in outcomes]
        for start in range(0, len(entities), MAX_TRANSACTION):
            chunk = entities[start : start + MAX_TRANSACTION]
            await self._table.submit_transaction(
                [("upsert", entity, {"mode": UpdateMode.MERGE}) for entity in chunk]
            )

    async def operations(self, job_id: str) -> list[OperationRecord]:
        """A job's operation rows in submission order."""
        records = [
            OperationRecord.from_entity(dict(entity))
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @empty",
                parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY},
            )
        ]
        return sorted(records, key=lambda record: (record.seq, record.op_id))

    async def outputs(self, job_id: str, op_ids: set[str]) -> dict[str, JsonValue]:
        """Recorded response bodies of succeeded operations (not truncated ones) by id."""
        return {
            record.op_id: record.response_body
            for record in await self.operations(job_id)
            if record.op_id in op_ids
            and record.status is OperationStatus.SUCCEEDED
            and not record.response_body_truncated
        }

    async def statuses(self, job_id: str) -> dict[str, OperationStatus]:
        return {
            entity["RowKey"]: OperationStatus(entity.get("Status", "Pending"))
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @empty",
                parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY},
                select=["RowKey", "Status"],
            )
        }

    async def refresh_summary(self, job_id: str) -> JobSummary | None:
        """Recount the job from its rows; optimistic concurrency keeps the newest count."""
        for _ in range(_SUMMARY_RETRIES):
            summary = await self.get_summary(job_id)
            if summary is None:
                return None
            counts = Counter((await self.statuses(job_id)).values())
            summary.counts = dict(counts)
            try:
                await self._table.update_entity(
                    summary.to_entity(utcnow()),
                    mode=UpdateMode.MERGE,
                    etag=summary.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
                return summary
            except HttpResponseError as error:
                if error.status_code != 412:
                    raise
        return await self.get_summary(job_id)
