"""Bulk user updates: CSV files in the bulk container become jobs on the bulk queue.

One pickup run: list new files -> lease one -> download it to a temporary file, hashing as it
streams -> count its rows -> compare them with Graph and record and enqueue what changed, chunk
by chunk (or, with change detection off, every row in parts) -> wait a while for the job ->
move the file to `processed/` with a summary next to it (or to `failed/` with the reason).
Once a file's work is queued, its job is watched for the trigger's subscribers, as the other
doors' jobs are.
Files under `preview/` are compared and described, never applied (batching.bulk.preview).

Every step may be repeated. The job id is the content hash, so the same content is applied once
whatever the file is called; a restart resumes at the first part not yet on the queue; the
lease keeps two runs (the timer and `python -m batching bulk run`) off the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, Final

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import BlobClient, BlobLeaseClient, ContainerClient

from batching.bulk.changes import NO_CHANGE
from batching.bulk.comparison import FileSurvey, compare, read_plan, survey
from batching.bulk.current import ReadFailed, UserDirectory
from batching.bulk.preview import write_preview
from batching.bulk.reader import (
    RowOperations,
    RowRejection,
    UnreadableFile,
    bulk_job_id,
    content_hash,
    read_rows,
)
from batching.models import Operation, WorkItem
from batching.records import JobSummary, OperationOutcome, OperationStatus, utcnow
from batching.storage import create_if_missing
from batching.store import ResultStore
from batching.workqueue import WorkQueue, pack_work

log = logging.getLogger(__name__)

PROCESSED: Final = "processed/"
FAILED: Final = "failed/"
PREVIEW: Final = "preview/"
PREVIEW_SUFFIX: Final = ".preview"
SOURCE_ETAG: Final = "sourceetag"  # metadata of a preview's JSON: the version it describes
SUMMARY_SUFFIX: Final = ".summary.json"
# A multiple of 20: each part fills whole $batch calls, wherever its messages are run.
PART_OPERATIONS: Final = 60
LEASE_SECONDS: Final = 60
_CHECK_INTERVAL_SECONDS: Final = 1.0
_WATCH_INTERVAL_SECONDS: Final = 0.25
_RECOUNT_FROM: Final = 1_000  # jobs larger than this are recounted only once nothing is Pending
_CHUNKS_RECORDING: Final = 4
_CHUNKS_BUFFERED: Final = 40  # final rows of this many chunks may wait for Table storage
_KEYS_PER_CHECK: Final = 14  # row keys one Table query can name beside the partition
_WATCHED_AT_MOST: Final = 2_000  # more written operations than this: the job is recounted instead

# Opens the file for one pass over it (the file is read twice: to count, then to enqueue).
Opener = Callable[[], AbstractContextManager[IO[bytes]]]
# Offers a job to the trigger's subscribers once it is done (SubscriptionDesk.watch): job id,
# operations still to run.
Watch = Callable[[str, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Part:
    operations: list[tuple[int, Operation]] = field(default_factory=list)
    rejections: list[RowRejection] = field(default_factory=list)


def _parts(rows: Iterator[RowOperations | RowRejection]) -> Iterator[_Part]:
    """Rows cut into parts of exactly PART_OPERATIONS operations (the last may be smaller)."""
    part = _Part()
    for row in rows:
        if isinstance(row, RowRejection):
            part.rejections.append(row)
            continue
        for operation in row.operations:
            part.operations.append((row.line, operation))
            if len(part.operations) == PART_OPERATIONS:
                yield part
                part = _Part()
    if part.operations or part.rejections:
        yield part


def count_rows(open_file: Opener) -> int:
    """Results the file will have: one per operation and one per rejected row."""
    with open_file() as stream:
        total = sum(1 if isinstance(row, RowRejection) else len(row.operations) for row in read_rows(stream))
    if total == 0:
        raise UnreadableFile("the file has a header but no data rows")
    return total


class BulkImporter:
    """A CSV file as one job: rows recorded and enqueued part by part, resumable.

    With a `directory`, rows are compared with what Graph holds first (batching.bulk.changes):
    only differing properties are written, and unchanged operations end `Succeeded` with the
    note "no change" without being sent. Without one, every row is written.

    With a `watch`, each file's job is offered to the trigger's subscribers once it is done, as
    the HTTP and queue doors offer theirs."""

    def __init__(
        self,
        store: ResultStore,
        queue: WorkQueue,
        directory: UserDirectory | None = None,
        *,
        watch: Watch | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self.directory = directory
        self._watch = watch
        # Per job, the operations this process enqueued in change-aware mode, in order: the
        # pickup watches these few instead of recounting the whole job until they are done.
        self.sent: dict[str, list[str]] = {}

    async def enqueue(self, open_file: Opener, *, name: str, sha256: str) -> JobSummary:
        """The file's job, recorded and on the queue (already there when this content was seen).

        Raises UnreadableFile before anything is recorded when the file cannot be applied, and
        ReadFailed when Graph's current values could not be read (the next run resumes).
        """
        job_id = bulk_job_id(sha256)
        existing = await self._store.get_summary(job_id)
        if existing is not None and existing.enqueued and existing.total > 0:
            return existing
        file = await asyncio.to_thread(survey, open_file) if self.directory is not None else None
        total = file.results if file is not None else await asyncio.to_thread(count_rows, open_file)
        summary = existing or JobSummary(job_id, total, sha256, name[:256], source="bulk")
        resuming = existing is not None or not await self._store.create_job(summary, [])
        if resuming:
            summary = await self._store.get_summary(job_id) or summary
        if file is not None and self.directory is not None:
            await self._enqueue_changes(open_file, summary, file, self.directory, resuming=resuming)
        else:
            await self._enqueue_parts(open_file, summary, resuming=resuming)
        if self._watch is not None:
            # After the work is queued and before the job is marked so: a run that stops in
            # between watches again when it resumes (a second watch sends nothing twice).
            await self._watch(job_id, summary.pending)
        await self._store.mark_enqueued(job_id)
        summary.enqueued = True
        log.info("bulk file %s: job %s with %d results enqueued", name, job_id, summary.total)
        return summary

    async def _enqueue_changes(
        self,
        open_file: Opener,
        summary: JobSummary,
        file: FileSurvey,
        directory: UserDirectory,
        *,
        resuming: bool,
    ) -> None:
        """Compare chunk by chunk; record each chunk's results and enqueue its writes at once,
        so writes start while later chunks are still being read. A resumed run compares again
        and skips every operation that already has a final result."""
        job_id = summary.job_id
        done = (
            {op for op, status in (await self._store.statuses(job_id)).items() if status.is_final}
            if resuming
            else set()
        )
        plan = await read_plan(directory, file)
        log.info("bulk job %s: reading current values by %s", job_id, plan.describe())
        sent = self.sent.setdefault(job_id, [])
        collapsed = 0
        # Writes first: each chunk's Pending rows are recorded and its messages enqueued at once;
        # its final rows ("no change", rejected), the bulk of a nightly file, go to recorders
        # that may fall behind the comparison (up to a bound), so Graph's writes never wait
        # for Table storage to take the rest.
        final: asyncio.Queue[list[OperationOutcome] | None] = asyncio.Queue(maxsize=_CHUNKS_BUFFERED)
        recorders = [
            asyncio.create_task(self._record_final(summary, final)) for _ in range(_CHUNKS_RECORDING)
        ]
        writing: set[asyncio.Future[None]] = set()
        try:
            async for compared in compare(open_file, directory, plan):
                rows = [
                    _rejected(rejection) for rejection in compared.rejections if rejection.op_id not in done
                ]
                pending: list[OperationOutcome] = []
                items: list[WorkItem] = []
                for row_plan in compared.plans:
                    line = row_plan.row.line
                    unchanged = row_plan.unchanged
                    if (
                        not row_plan.send
                        and len(unchanged) > 1
                        and not done & {op.id for op in unchanged[1:]}
                    ):
                        # A row that changes nothing gets one result, not one per operation:
                        # half the rows to record on a nightly file where nearly nothing changes.
                        unchanged = unchanged[:1]
                        collapsed += len(row_plan.unchanged) - 1
                    for op in unchanged:
                        if op.id not in done:
                            rows.append(_outcome(op, OperationStatus.SUCCEEDED, line, note=NO_CHANGE))
                    for op in row_plan.send:
                        if op.id not in done:
                            pending.append(_outcome(op, OperationStatus.PENDING, line))
                            items.append(WorkItem(operation=op, seq=line))
                            if len(sent) <= _WATCHED_AT_MOST:
                                sent.append(op.id)
                if pending:
                    if len(writing) >= _CHUNKS_RECORDING:
                        finished, writing = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
                        for task in finished:
                            task.result()
                    writing.add(asyncio.create_task(self._record_chunk(summary, pending, items)))
                if rows:
                    await _hand_over(final, rows, recorders)
            for _ in recorders:
                await _hand_over(final, None, recorders)
            await asyncio.gather(*writing, *recorders)
            if collapsed:
                summary.total = file.results - collapsed
                await self._store.set_total(job_id, summary.total)
        except asyncio.CancelledError:
            for task in (*writing, *recorders):
                task.cancel()
            raise
        except BaseException:
            # What was compared before a failed read is still recorded and written: the next
            # run finds it final and does not send it again.
            for _ in recorders:
                with contextlib.suppress(asyncio.QueueFull):
                    final.put_nowait(None)
            await asyncio.gather(*writing, *recorders, return_exceptions=True)
            self.sent.pop(job_id, None)  # the run that resumes it recounts instead
            raise

    async def _record_final(
        self, summary: JobSummary, final: asyncio.Queue[list[OperationOutcome] | None]
    ) -> None:
        while (rows := await final.get()) is not None:
            await self._store.record(summary.job_id, summary.correlation_id, rows)

    async def _record_chunk(
        self, summary: JobSummary, rows: list[OperationOutcome], items: list[WorkItem]
    ) -> None:
        """Rows first, then the writes on the queue: a crash in between leaves rows Pending
        without a message, and the next run compares and enqueues them again."""
        await self._store.record(summary.job_id, summary.correlation_id, rows)
        # In parts of PART_OPERATIONS, as with change detection off: each message is three full
        # batches, so an invocation holds as much work in flight whichever mode made it.
        for start in range(0, len(items), PART_OPERATIONS):
            part = items[start : start + PART_OPERATIONS]
            for message in pack_work(summary.job_id, summary.correlation_id, part, priority="low"):
                await self._queue.send(message)

    async def _enqueue_parts(self, open_file: Opener, summary: JobSummary, *, resuming: bool) -> None:
        job_id, correlation_id = summary.job_id, summary.correlation_id
        with open_file() as stream:
            for index, part in enumerate(_parts(read_rows(stream))):
                if index < summary.queued_parts:
                    continue  # on the queue before a restart
                pending = [
                    OperationOutcome(
                        op_id=op.id,
                        status=OperationStatus.PENDING,
                        method=op.method,
                        url=op.url,
                        seq=line,
                    )
                    for line, op in part.operations
                ]
                if resuming and index == summary.queued_parts:
                    # This part may have been sent just before a restart: never put a
                    # row that already has a result back to Pending.
                    recorded = await self._store.statuses(job_id, [row.op_id for row in pending])
                    pending = [row for row in pending if row.op_id not in recorded]
                rejected = [_rejected(rejection) for rejection in part.rejections]
                await self._store.record(job_id, correlation_id, [*pending, *rejected])
                items = [WorkItem(operation=op) for _, op in part.operations]
                for message in pack_work(job_id, correlation_id, items, priority="low"):
                    await self._queue.send(message)
                await self._store.mark_queued_parts(job_id, index + 1)


@dataclass(frozen=True, slots=True)
class FileReport:
    """What one run did with one file; also the summary blob written next to the moved file."""

    file: str
    outcome: str  # processed | failed | duplicate | running | retry
    job_id: str | None = None
    sha256: str | None = None
    status: str | None = None
    counts: dict[str, int] | None = None
    reason: str | None = None
    applied_as: str | None = None  # a copy: the file whose job applied this content

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "file": self.file,
            "outcome": self.outcome,
            "jobId": self.job_id,
            "sha256": self.sha256,
            "status": self.status,
            "counts": self.counts,
            "reason": self.reason,
            "appliedAs": self.applied_as,
            "writtenAt": utcnow().isoformat(),
        }
        if self.job_id and self.outcome != "failed":
            document["failures"] = f"python -m batching failures {self.job_id}"
        return {key: value for key, value in document.items() if value is not None}


@dataclass(slots=True)
class _Taken:
    blob: BlobClient
    lease: BlobLeaseClient
    summary: JobSummary
    sent: list[str] | None = None  # operations this run enqueued and has not yet seen final


class BulkPickup:
    """Picks up new CSV files in the bulk container; one `run_once` per timer tick."""

    def __init__(
        self,
        container: ContainerClient,
        store: ResultStore,
        queue: WorkQueue,
        *,
        wait_seconds: float,
        directory: UserDirectory | None = None,
        change_detection: bool = True,
        watch: Watch | None = None,
    ) -> None:
        self._container = container
        self._store = store
        self.directory = directory  # reads current values (change detection and previews)
        self.importer = BulkImporter(store, queue, directory if change_detection else None, watch=watch)
        self._container_ready = False
        self.wait_seconds = wait_seconds

    async def ensure_container(self) -> None:
        await create_if_missing(
            self._container.create_container, f"container {self._container.container_name}"
        )

    async def close(self) -> None:
        await self._container.close()

    async def run_once(self) -> list[FileReport]:
        """Take every new file; wait up to `wait_seconds` for their jobs; move what finished."""
        if not self._container_ready:
            await self.ensure_container()
            self._container_ready = True
        reports: list[FileReport] = []
        taken: list[_Taken] = []
        async with contextlib.AsyncExitStack() as leases:
            async for name in self._new_files():
                blob = self._container.get_blob_client(name)
                lease = await leases.enter_async_context(_leased(blob))
                if lease is None:
                    reports.append(FileReport(name, "running", reason="another pickup run holds it"))
                    continue
                try:
                    report, summary = await self._take(blob, lease)
                except AzureError as error:
                    # Storage trouble with this file: the others still run; the next run
                    # resumes this one where it stopped.
                    log.warning("bulk file %s: %s; left for the next run", name, error)
                    reports.append(FileReport(name, "retry", reason=f"storage error: {type(error).__name__}"))
                    continue
                except ReadFailed as error:
                    log.warning("bulk file %s: %s; left for the next run", name, error)
                    reports.append(FileReport(name, "retry", reason=f"reading current values: {error}"))
                    continue
                if summary is not None:
                    sent = self.importer.sent.pop(summary.job_id, None)
                    watched = sent if sent is not None and len(sent) <= _WATCHED_AT_MOST else None
                    taken.append(_Taken(blob, lease, summary, watched))
                elif report is not None:
                    reports.append(report)
            # Previews first: an admin waits for them, while applied files wait for their jobs.
            reports.extend([report async for report in self._previews()])
            reports.extend(await self._finish(taken))
        for report in reports:
            log.info("bulk file %s: %s %s", report.file, report.outcome, report.status or report.reason or "")
        return reports

    async def _new_files(self) -> AsyncIterator[str]:
        async for blob in self._container.list_blobs():
            name: str = blob.name
            if name.startswith((PROCESSED, FAILED, PREVIEW)):
                continue
            if not name.lower().endswith(".csv"):
                log.info("bulk container: %s is not a .csv file; left alone", name)
                continue
            yield name

    async def _previews(self) -> AsyncIterator[FileReport]:
        """Each CSV under `preview/` not previewed in its current version: compared with
        Graph, nothing written; `<name>.preview.csv` and `.json` are written beside it."""
        async for blob in self._container.list_blobs(name_starts_with=PREVIEW, include=["metadata"]):
            name: str = blob.name
            if not name.lower().endswith(".csv") or name.lower().endswith(PREVIEW_SUFFIX + ".csv"):
                continue
            stem = name[: -len(".csv")]
            done = self._container.get_blob_client(stem + PREVIEW_SUFFIX + ".json")
            with contextlib.suppress(ResourceNotFoundError):
                if (await done.get_blob_properties()).metadata.get(SOURCE_ETAG) == _etag(blob.etag):
                    continue  # this version was previewed already
            source = self._container.get_blob_client(name)
            async with _leased(source) as lease:
                if lease is None:
                    continue  # another run is previewing it
                try:
                    yield await self._preview(source, stem, _etag(blob.etag))
                except (AzureError, ReadFailed) as error:
                    log.warning("bulk preview %s: %s; left for the next run", name, error)
                    yield FileReport(name, "retry", reason=str(error))

    async def _preview(self, blob: BlobClient, stem: str, etag: str) -> FileReport:
        name = blob.blob_name
        if self.directory is None:
            raise ReadFailed("previews need Graph access, and this pickup has none")
        with (
            tempfile.TemporaryFile() as local,
            tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as csv_out,
            tempfile.TemporaryFile("w+", encoding="utf-8") as json_out,
        ):
            sha256 = await download_to(blob, local)
            try:
                result = await write_preview(
                    rewinding(local),
                    self.directory,
                    name=name,
                    sha256=sha256,
                    csv_out=csv_out,
                    json_out=json_out,
                )
            except UnreadableFile as error:
                report = FileReport(name, "failed", sha256=sha256, status="Unreadable", reason=str(error))
                json_out.write(json.dumps(report.to_json(), indent=2))
            else:
                report = FileReport(
                    name, "preview", sha256=sha256, status="Preview", counts=result.counts.to_json()
                )
                csv_out.seek(0)
                await self._container.upload_blob(
                    stem + PREVIEW_SUFFIX + ".csv", csv_out.read().encode("utf-8"), overwrite=True
                )
            json_out.seek(0)
            # The JSON last, marked with the version it describes: its presence ends the preview.
            await self._container.upload_blob(
                stem + PREVIEW_SUFFIX + ".json",
                json_out.read().encode("utf-8"),
                overwrite=True,
                metadata={SOURCE_ETAG: etag},
            )
        return report

    async def _take(
        self, blob: BlobClient, lease: BlobLeaseClient
    ) -> tuple[FileReport | None, JobSummary | None]:
        """The file's job once it is on the queue; or the report of a file that is done here."""
        name = blob.blob_name
        with tempfile.TemporaryFile() as local:
            sha256 = await download_to(blob, local)
            summary = await self._store.get_summary(bulk_job_id(sha256))
            if (
                summary is not None
                and summary.enqueued
                and summary.total > 0
                and summary.correlation_id != name[:256]
            ):
                # The same content under another name: applied (or being applied) once already.
                await self._store.refresh_summary(summary.job_id)
                report = FileReport(
                    name,
                    "duplicate",
                    summary.job_id,
                    sha256,
                    status="NotApplied",
                    reason="the same content was already submitted",
                    applied_as=summary.correlation_id,
                )
                await self._move(blob, lease, PROCESSED, report)
                return report, None
            try:
                summary = await self.importer.enqueue(rewinding(local), name=name, sha256=sha256)
            except UnreadableFile as error:
                report = FileReport(
                    name, "failed", bulk_job_id(sha256), sha256, "Unreadable", reason=str(error)
                )
                await self._record_unreadable(report)
                await self._move(blob, lease, FAILED, report)
                return report, None
        return None, summary

    async def _finish(self, taken: list[_Taken]) -> list[FileReport]:
        """Move each file whose job is done; the rest stay for a later run."""
        reports: list[FileReport] = []
        deadline = time.monotonic() + self.wait_seconds
        while taken:
            still: list[_Taken] = []
            for item in taken:
                if item.sent and not await self._sent_final(item):
                    still.append(item)  # what this run wrote is not all recorded yet
                    continue
                if item.summary.total > _RECOUNT_FROM and await self._store.has_pending(item.summary.job_id):
                    still.append(item)  # a large job is recounted only once nothing is Pending
                    continue
                # Recounted, and the unchanged counted, in one read of every row of the job.
                refreshed, unchanged = await self._store.recount_noting(item.summary.job_id, NO_CHANGE)
                summary = refreshed or item.summary
                if not summary.done:
                    still.append(item)
                    continue
                report = FileReport(
                    item.blob.blob_name,
                    "processed",
                    summary.job_id,
                    summary.body_hash,
                    summary.status.value,
                    result_counts(summary, unchanged),
                )
                await self._move(item.blob, item.lease, PROCESSED, report)
                reports.append(report)
            taken = still
            if taken and time.monotonic() >= deadline:
                for item in taken:
                    reports.append(
                        FileReport(item.blob.blob_name, "running", item.summary.job_id, status="Running")
                    )
                break
            if taken:
                # Watching a few written operations costs a key lookup: look often then.
                watching = all(item.sent for item in taken)
                await asyncio.sleep(_WATCH_INTERVAL_SECONDS if watching else _CHECK_INTERVAL_SECONDS)
        return reports

    async def _sent_final(self, item: _Taken) -> bool:
        """Whether every operation this run enqueued has its final row: the last ones first
        (the queue runs roughly in order), the rest only once those are; a few key lookups
        per check instead of reading the whole job."""
        assert item.sent is not None
        job_id = item.summary.job_id
        last = item.sent[-_KEYS_PER_CHECK:]
        statuses = await self._store.statuses(job_id, last)
        if not all(statuses.get(op, OperationStatus.PENDING).is_final for op in last):
            return False
        groups = [
            item.sent[start : start + _KEYS_PER_CHECK] for start in range(0, len(item.sent), _KEYS_PER_CHECK)
        ]
        found: dict[str, OperationStatus] = {}
        for part in await asyncio.gather(*(self._store.statuses(job_id, group) for group in groups)):
            found.update(part)
        item.sent = [op for op in item.sent if not found.get(op, OperationStatus.PENDING).is_final]
        return not item.sent

    async def _record_unreadable(self, report: FileReport) -> None:
        assert report.job_id is not None
        summary = JobSummary(
            report.job_id,
            0,
            report.sha256,
            report.file[:256],
            source="bulk",
            enqueued=True,
            reason=report.reason,
        )
        await self._store.create_job(summary, [])

    async def _move(self, blob: BlobClient, lease: BlobLeaseClient, prefix: str, report: FileReport) -> None:
        """Summary first, then copy, then delete: a crash in between is finished by the next run."""
        target = self._container.get_blob_client(prefix + blob.blob_name)
        await self._container.upload_blob(
            prefix + blob.blob_name + SUMMARY_SUFFIX,
            json.dumps(report.to_json(), indent=2).encode("utf-8"),
            overwrite=True,
        )
        copy = await target.start_copy_from_url(blob.url)
        status = copy.get("copy_status")
        while status == "pending":
            await asyncio.sleep(0.5)
            status = (await target.get_blob_properties()).copy.status
        if status != "success":
            raise RuntimeError(f"copying {blob.blob_name} to {prefix} ended {status}")
        await blob.delete_blob(lease=lease)


async def download_to(blob: BlobClient, local: IO[bytes]) -> str:
    """Stream the blob into `local` in chunks; its SHA-256 comes out of the same pass."""
    digest = hashlib.sha256()
    downloader = await blob.download_blob()
    async for chunk in downloader.chunks():
        digest.update(chunk)
        local.write(chunk)
    local.flush()
    return digest.hexdigest()


def rewinding(local: IO[bytes]) -> Opener:
    """Each pass reads the downloaded file from the start; ending a pass keeps the file open."""

    @contextlib.contextmanager
    def rewound() -> Iterator[IO[bytes]]:
        local.seek(0)
        yield local

    return rewound


@contextlib.asynccontextmanager
async def _leased(blob: BlobClient) -> AsyncIterator[BlobLeaseClient | None]:
    """A renewed lease on the blob, or None when another run holds it."""
    try:
        lease = await blob.acquire_lease(lease_duration=LEASE_SECONDS)
    except HttpResponseError as error:
        if error.status_code == 409:
            yield None
            return
        raise

    async def renew() -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await lease.renew()

    renewing = asyncio.create_task(renew())
    try:
        yield lease
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError, HttpResponseError):
            await renewing
        with contextlib.suppress(HttpResponseError):
            await lease.release()  # fails harmlessly once the blob was moved


async def _hand_over(
    queue: asyncio.Queue[list[OperationOutcome] | None],
    rows: list[OperationOutcome] | None,
    recorders: list[asyncio.Task[None]],
) -> None:
    """Put `rows` on the recorders' queue, waiting while it is full; raise what a recorder
    raised instead of waiting for recorders that stopped."""
    putting = asyncio.ensure_future(queue.put(rows))
    await asyncio.wait({putting, *recorders}, return_when=asyncio.FIRST_COMPLETED)
    if not putting.done():
        for recorder in recorders:
            if recorder.done() and (error := recorder.exception()) is not None:
                putting.cancel()
                raise error
    await putting


def _outcome(
    op: Operation, status: OperationStatus, line: int, *, note: str | None = None
) -> OperationOutcome:
    return OperationOutcome(op_id=op.id, status=status, method=op.method, url=op.url, note=note, seq=line)


def _rejected(rejection: RowRejection) -> OperationOutcome:
    return OperationOutcome(
        op_id=rejection.op_id,
        status=OperationStatus.REJECTED,
        method="",
        url="",
        error_code="invalidRow",
        error_message=str(rejection),
        seq=rejection.line,
    )


def result_counts(summary: JobSummary, unchanged: int) -> dict[str, int]:
    """A bulk job's counts per status, and its succeeded split into changed and unchanged
    (written, or found as the file has them: note "no change")."""
    counts = summary.counts_json()
    return {**counts, "changed": counts.get("succeeded", 0) - unchanged, "unchanged": unchanged}


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def open_local(path: str) -> Opener:
    """An opener for a file on disk (the CLI's `submit FILE.csv`)."""
    return lambda: open(path, "rb")


def hash_local(path: str) -> str:
    with open(path, "rb") as stream:
        return content_hash(stream)
