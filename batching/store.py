"""ResultStore: every operation's row and each job's summary row in Table storage.

Rows are upserted (merge), so the same outcome written twice is still one row; writes for one
job go in entity-group transactions of up to 100.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient
from pydantic import JsonValue

from batching.claims import NO_ROW, RowState
from batching.models import MAX_OPERATIONS_PER_SUBMISSION
from batching.records import (
    PROCESSING_FAILED,
    SUMMARY_ROW_KEY,
    JobSummary,
    OperationOutcome,
    OperationRecord,
    OperationStatus,
    utcnow,
)
from batching.storage import create_table_if_missing, merge_if_unchanged

T = TypeVar("T")
V = TypeVar("V")

MAX_TRANSACTION: Final = 100
_MAX_TRANSACTION_BYTES: Final = 3 * 1024 * 1024
_SUMMARY_RETRIES: Final = 10
# The Table service allows at most 15 comparisons in one filter: PartitionKey plus 14 RowKeys.
_KEYS_PER_QUERY: Final = 14
# Outcome writes in flight per process (a wave records batch by batch, concurrently), and how
# often one is tried when the connection drops.
_CONCURRENT_WRITES: Final = 8
_WRITE_ATTEMPTS: Final = 4
# From this many operations on, reading a small job's rows whole is cheaper than key lookups.
_SCAN_FROM_KEYS: Final = 300
# Only a job of at most a submission's operations is read whole for a few hundred of them: a
# run that holds many messages of a bulk job (of 100,000 rows, say) looks them up by key, or
# each run would read, and hold, the whole job.
_SCAN_JOBS_UP_TO: Final = MAX_OPERATIONS_PER_SUBMISSION
_LOOKUPS_AT_ONCE: Final = 16


class ResultStore:
    def __init__(self, table: TableClient, *, max_concurrent_writes: int = _CONCURRENT_WRITES) -> None:
        self._table = table
        self._writes = asyncio.Semaphore(max_concurrent_writes)

    async def ensure_table(self) -> None:
        await create_table_if_missing(self._table)

    async def close(self) -> None:
        await self._table.close()

    async def get_summary(self, job_id: str) -> JobSummary | None:
        try:
            entity = await self._table.get_entity(job_id, SUMMARY_ROW_KEY)
        except ResourceNotFoundError:
            return None
        return JobSummary.from_entity(dict(entity), entity.metadata.get("etag"))

    async def summary_entity(self, job_id: str) -> tuple[dict[str, Any], str | None] | None:
        """The job's summary row as stored, every property, with its ETag (None: no job)."""
        try:
            entity = await self._table.get_entity(job_id, SUMMARY_ROW_KEY)
        except ResourceNotFoundError:
            return None
        return dict(entity), entity.metadata.get("etag")

    async def merge_summary(self, job_id: str, fields: dict[str, Any], etag: str | None) -> bool:
        """Merge `fields` into the job's summary row if it is still as read (`etag`); False
        when it changed meanwhile or is gone."""
        entity = {"PartitionKey": job_id, "RowKey": SUMMARY_ROW_KEY, **fields, "UpdatedAt": utcnow()}
        return await merge_if_unchanged(self._table, entity, etag, self._with_retries)

    async def create_job(self, summary: JobSummary, rows: Sequence[OperationOutcome]) -> bool:
        """Insert the summary, then the rows; False when the job already existed."""
        summary.counts = dict(Counter(row.status for row in rows))
        if not await self.create_summary(summary):
            return False
        await self.record(summary.job_id, summary.correlation_id, rows)
        return True

    async def create_summary(self, summary: JobSummary) -> bool:
        """Insert the job's summary row only (the claim on its jobId); False when it existed."""
        try:
            await self._table.create_entity(summary.to_entity(utcnow()))
        except ResourceExistsError:
            return False
        return True

    async def delete_job(self, job_id: str) -> None:
        """Remove a job's summary and rows (a rejected job that is being submitted again)."""
        keys = [
            entity["RowKey"]
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": job_id}, select=["RowKey"]
            )
        ]
        for start in range(0, len(keys), MAX_TRANSACTION):
            await self._table.submit_transaction(
                [
                    ("delete", {"PartitionKey": job_id, "RowKey": key})
                    for key in keys[start : start + MAX_TRANSACTION]
                ]
            )

    async def reopen(self, job_id: str, op_ids: Collection[str], why: str) -> int:
        """Put operations that failed only because processing crashed back to Pending."""
        reopened = [
            {
                "PartitionKey": job_id,
                "RowKey": record.op_id,
                "Status": OperationStatus.PENDING.value,
                "ErrorCode": "",
                "ErrorMessage": why,
                # Whichever message runs it again may claim it.
                "Ticket": "",
                "ClaimedAt": "",
                "UpdatedAt": utcnow(),
            }
            for record in await self.operations(job_id)
            if record.op_id in op_ids
            and record.status is OperationStatus.FAILED
            and record.error_code == PROCESSING_FAILED
        ]
        for start in range(0, len(reopened), MAX_TRANSACTION):
            await self._table.submit_transaction(
                [
                    ("upsert", entity, {"mode": UpdateMode.MERGE})
                    for entity in reopened[start : start + MAX_TRANSACTION]
                ]
            )
        return len(reopened)

    async def mark_enqueued(self, job_id: str) -> None:
        await self._table.upsert_entity(
            {"PartitionKey": job_id, "RowKey": SUMMARY_ROW_KEY, "Enqueued": True, "UpdatedAt": utcnow()},
            mode=UpdateMode.MERGE,
        )

    async def mark_queued_parts(self, job_id: str, parts: int) -> None:
        """How many parts of a job being enqueued are on the queue (where a restart resumes)."""
        await self._table.upsert_entity(
            {"PartitionKey": job_id, "RowKey": SUMMARY_ROW_KEY, "QueuedParts": parts, "UpdatedAt": utcnow()},
            mode=UpdateMode.MERGE,
        )

    async def record(
        self, job_id: str, correlation_id: str | None, outcomes: Iterable[OperationOutcome]
    ) -> None:
        now = utcnow()
        entities = [outcome.to_entity(job_id, correlation_id, now) for outcome in outcomes]
        await asyncio.gather(*(self._upsert(chunk) for chunk in _transactions(entities)))

    async def _upsert(self, chunk: list[dict[str, Any]]) -> None:
        # A dropped connection is tried again: an outcome Graph has acted on is worth a few
        # more seconds before the message is given up.
        await self._with_retries(
            lambda: self._table.submit_transaction(
                [("upsert", entity, {"mode": UpdateMode.MERGE}) for entity in chunk]
            )
        )

    async def claim(
        self, job_id: str, claims: Sequence[tuple[str, RowState, OperationOutcome]], ticket: str
    ) -> set[str]:
        """Claim operations for sending under `ticket`; the ids this call claimed.

        Each claim is conditional on the row being as it was read (`RowState.etag`), or absent,
        so two deliveries cannot both claim one operation. One transaction per 100 when nothing
        raced; when one did, each is tried alone and the losers are left out. Every claim
        carries a nonce of this call, so a claim that landed although its answer was lost (a
        dropped connection, then a retry that conflicts with it) is still known as this one's."""
        now = utcnow()
        nonce = uuid.uuid4().hex

        def operation(op_id: str, state: RowState, row: OperationOutcome) -> tuple[Any, ...]:
            claim = {
                "PartitionKey": job_id,
                "RowKey": op_id,
                "Ticket": ticket,
                "ClaimedAt": now,
                "ClaimNonce": nonce,
                "UpdatedAt": now,
            }
            if state.etag is None:
                entity = row.to_entity(job_id, None, now) | claim
                entity.pop("CorrelationId", None)
                return ("create", entity)
            return (
                "update",
                claim,
                {
                    "mode": UpdateMode.MERGE,
                    "etag": state.etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            )

        operations = [operation(op_id, state, row) for op_id, state, row in claims]
        claimed: set[str] = set()
        for start in range(0, len(operations), MAX_TRANSACTION):
            chunk = operations[start : start + MAX_TRANSACTION]
            ids = [op_id for op_id, _, _ in claims[start : start + MAX_TRANSACTION]]
            try:
                await self._with_retries(partial(self._table.submit_transaction, chunk))
                claimed.update(ids)
                continue
            except TableTransactionError:
                pass  # someone else (or this call, unanswered) wrote one of these rows
            won = await asyncio.gather(*(self._claim_one(job_id, op, nonce) for op in chunk))
            claimed.update(op_id for op_id, ok in zip(ids, won, strict=True) if ok)
        return claimed

    async def _claim_one(self, job_id: str, operation: tuple[Any, ...], nonce: str) -> bool:
        entity = operation[1]
        try:
            if operation[0] == "create":
                await self._with_retries(lambda: self._table.create_entity(entity))
            else:
                await self._with_retries(lambda: self._table.update_entity(entity, **operation[2]))
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            if error.status_code not in (409, 412):
                raise
        else:
            return True
        current = await self._with_retries(lambda: self._table.get_entity(job_id, entity["RowKey"]))
        return bool(current.get("ClaimNonce") == nonce)

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """One Table call, tried again when the connection drops (the SDK already retried it)."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                async with self._writes:
                    return await call()
            except (ServiceRequestError, ServiceResponseError):
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def row_states(self, job_id: str, op_ids: Collection[str]) -> dict[str, RowState]:
        """Each operation's status and claim, with its ETag; absent rows are `NO_ROW`."""
        ids = sorted(set(op_ids))
        if await self._reads_whole_job(job_id, len(ids)):
            found = await self._row_states(job_id)
        else:
            found = await self._by_key_groups(ids, partial(self._row_states, job_id))
        return {op_id: found.get(op_id, NO_ROW) for op_id in ids}

    async def _reads_whole_job(self, job_id: str, keys: int) -> bool:
        """Whether `keys` operations of the job are better read with the whole job: many of
        them, in a job known to be small."""
        if keys < _SCAN_FROM_KEYS:
            return False
        summary = await self.get_summary(job_id)
        return summary is not None and summary.total <= _SCAN_JOBS_UP_TO

    @staticmethod
    async def _by_key_groups(
        ids: Sequence[str], query: Callable[..., Awaitable[dict[str, V]]]
    ) -> dict[str, V]:
        """`query(*keys)` for groups of at most as many keys as one filter may name, a bounded
        number at once."""
        groups = [ids[start : start + _KEYS_PER_QUERY] for start in range(0, len(ids), _KEYS_PER_QUERY)]
        found: dict[str, V] = {}
        for start in range(0, len(groups), _LOOKUPS_AT_ONCE):
            wave = groups[start : start + _LOOKUPS_AT_ONCE]
            for part in await asyncio.gather(*(query(*group) for group in wave)):
                found.update(part)
        return found

    async def _row_states(self, job_id: str, *op_ids: str) -> dict[str, RowState]:
        parameters = {"pk": job_id, "empty": SUMMARY_ROW_KEY}
        keys = " or ".join(f"RowKey eq @k{index}" for index in range(len(op_ids)))
        parameters.update({f"k{index}": op_id for index, op_id in enumerate(op_ids)})
        row_filter = f"( {keys} )" if op_ids else "RowKey gt @empty"
        states: dict[str, RowState] = {}
        async for entity in self._table.query_entities(
            f"PartitionKey eq @pk and {row_filter}",
            parameters=parameters,
            select=["RowKey", "Status", "Ticket", "ClaimedAt"],
        ):
            claimed_at = entity.get("ClaimedAt")
            states[entity["RowKey"]] = RowState(
                OperationStatus(entity.get("Status") or "Pending"),
                entity.metadata.get("etag"),
                entity.get("Ticket") or "",
                claimed_at if isinstance(claimed_at, datetime) else None,
            )
        return states

    async def hand_over(self, job_id: str, tickets: dict[str, str]) -> None:
        """Name the ticket that now answers for each operation (work put back on the queue),
        without touching its status."""
        now = utcnow()
        entities = [
            {"PartitionKey": job_id, "RowKey": op_id, "Ticket": ticket, "ClaimedAt": "", "UpdatedAt": now}
            for op_id, ticket in tickets.items()
        ]
        await asyncio.gather(*(self._upsert(chunk) for chunk in _transactions(entities)))

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

    async def failures(self, job_id: str) -> list[OperationRecord]:
        """Operation rows that did not succeed (Failed, Skipped, Rejected), in submission order."""
        records = [
            OperationRecord.from_entity(dict(entity))
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @empty and Status ne @ok and Status ne @pending",
                parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY, "ok": "Succeeded", "pending": "Pending"},
            )
        ]
        return sorted(records, key=lambda record: (record.seq, record.op_id))

    async def statuses(
        self, job_id: str, op_ids: Collection[str] | None = None
    ) -> dict[str, OperationStatus]:
        """Status by operation id: the whole job, or only `op_ids` (cheap in a large job)."""
        if op_ids is None:
            return await self._statuses(job_id)
        ids = sorted(set(op_ids))
        if await self._reads_whole_job(job_id, len(ids)):
            wanted = set(ids)
            return {key: status for key, status in (await self._statuses(job_id)).items() if key in wanted}
        return await self._by_key_groups(ids, partial(self._statuses, job_id))

    async def count_statuses(self, job_id: str) -> dict[OperationStatus, int]:
        """Rows per status, counted as they stream in (a large job is never held whole)."""
        counts: Counter[OperationStatus] = Counter()
        async for entity in self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @empty",
            parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY},
            select=["Status"],
        ):
            counts[OperationStatus(entity.get("Status", "Pending"))] += 1
        return dict(counts)

    async def set_total(self, job_id: str, total: int) -> None:
        """The number of results a job will have, once it is known (a bulk file's rows that
        change nothing get one result instead of one per operation)."""
        await self._table.upsert_entity(
            {"PartitionKey": job_id, "RowKey": SUMMARY_ROW_KEY, "Total": total}, mode=UpdateMode.MERGE
        )

    async def has_pending(self, job_id: str) -> bool:
        """Whether any operation row of the job is still Pending: one filtered query that stops
        at the first, far cheaper than a recount for a large job that is not done."""
        async for _ in self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @empty and Status eq @pending",
            parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY, "pending": OperationStatus.PENDING.value},
            select=["RowKey"],
            results_per_page=1,
        ):
            return True
        return False

    async def recount_noting(self, job_id: str, note: str) -> tuple[JobSummary | None, int]:
        """`refresh_summary`, and the rows whose Note is `note`, from one read of the rows (a
        large bulk job's final count reads every row once, not twice)."""
        for _ in range(_SUMMARY_RETRIES):
            summary = await self.get_summary(job_id)
            if summary is None:
                return None, 0
            counts: Counter[OperationStatus] = Counter()
            noted = 0
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @empty",
                parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY},
                select=["Status", "Note"],
            ):
                counts[OperationStatus(entity.get("Status", "Pending"))] += 1
                noted += entity.get("Note") == note
            summary.counts = dict(counts)
            try:
                await self._table.update_entity(
                    summary.to_entity(utcnow()),
                    mode=UpdateMode.MERGE,
                    etag=summary.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
                return summary, noted
            except HttpResponseError as error:
                if error.status_code != 412:
                    raise
        return await self.get_summary(job_id), await self.count_noted(job_id, note)

    async def count_noted(self, job_id: str, note: str) -> int:
        """Rows whose Note is `note` (a bulk job's "no change" results), counted as they stream."""
        count = 0
        async for _ in self._table.query_entities(
            "PartitionKey eq @pk and RowKey gt @empty and Note eq @note",
            parameters={"pk": job_id, "empty": SUMMARY_ROW_KEY, "note": note},
            select=["RowKey"],
        ):
            count += 1
        return count

    async def _statuses(self, job_id: str, *op_ids: str) -> dict[str, OperationStatus]:
        parameters = {"pk": job_id, "empty": SUMMARY_ROW_KEY}
        keys = " or ".join(f"RowKey eq @k{index}" for index in range(len(op_ids)))
        parameters.update({f"k{index}": op_id for index, op_id in enumerate(op_ids)})
        row_filter = f"( {keys} )" if op_ids else "RowKey gt @empty"
        return {
            entity["RowKey"]: OperationStatus(entity.get("Status", "Pending"))
            async for entity in self._table.query_entities(
                f"PartitionKey eq @pk and {row_filter}", parameters=parameters, select=["RowKey", "Status"]
            )
        }

    async def refresh_summary(self, job_id: str, *, up_to: int | None = None) -> JobSummary | None:
        """Recount the job from its rows; optimistic concurrency keeps the newest count.

        With `up_to`, a job of more operations is returned as stored: recounting a large
        bulk job after every message would read it whole each time (its readers recount).
        """
        for _ in range(_SUMMARY_RETRIES):
            summary = await self.get_summary(job_id)
            if summary is None:
                return None
            if up_to is not None and summary.total > up_to:
                return summary
            summary.counts = await self.count_statuses(job_id)
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


def _transactions(entities: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Entities of one partition in entity-group transactions of at most 100 entities and
    well under the service's 4 MiB per transaction (rows with large responses split them)."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        weight = _weight(entity)
        if current and (len(current) == MAX_TRANSACTION or size + weight > _MAX_TRANSACTION_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(entity)
        size += weight
    if current:
        chunks.append(current)
    return chunks


def _weight(entity: dict[str, Any]) -> int:
    """An upper bound of the entity's bytes on the wire (UTF-8 JSON, 4 bytes a character at worst)."""
    return 1_024 + sum(4 * len(value) for value in entity.values() if isinstance(value, str))
