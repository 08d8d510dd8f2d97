"""ProvisioningService: what each door does. HTTP submits and reports; the queue runs work.

intake (HTTP body / queue text) -> validate (`intake`) -> record + enqueue, or run now
(`Processor`: plan -> send -> record / re-enqueue)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

import httpx

from batching import telemetry
from batching.allowlist import object_url_hosts
from batching.claims import job_ticket
from batching.coalescer import BatchCoalescer
from batching.connector.callback_urls import AllowedHosts
from batching.connector.callbacks import CallbackDesk, CallbackQueue, CallbackSender
from batching.connector.subscriptions import SubscriptionDesk, SubscriptionStore
from batching.errors import Problem
from batching.graph.async_operations import FollowPolicy
from batching.graph.auth import GraphTokenAuth, TokenCredential, build_credential, check_graph_endpoint
from batching.graph.client import GraphBatchClient, build_http_client
from batching.intake import Rejection, decode_queue_text, parse_job, read_work_message
from batching.models import Job
from batching.pacing import Lane, LaneLimit, Pacer, TablePaceStore
from batching.planner import MAX_BATCH_SIZE
from batching.processor import Processor, ReplicationPolicy, WorkUnit
from batching.records import PROCESSING_FAILED, JobSummary, OperationOutcome, OperationRecord, OperationStatus
from batching.retry import RetryPolicy
from batching.settings import Settings
from batching.storage import container_client, queue_client, table_client
from batching.store import ResultStore
from batching.workqueue import ExtraLeases, TakenMessage, WorkQueue, WorkQueues, WorkTooLarge, pack_work

if TYPE_CHECKING:
    from batching.bulk.pickup import BulkPickup

log = logging.getLogger(__name__)

# Extra messages are taken only while this process holds less work than this much budget.
EXTRA_WORK_HORIZON_SECONDS: Final = 15.0
EXTRA_PAGE: Final = 16

# Which queue a message came from: producers' jobs, or the app's own work (general or bulk).
QueueSource = Literal["jobs", "work", "bulk"]


@dataclass(frozen=True, slots=True)
class Accepted:
    summary: JobSummary
    created: bool


@dataclass(frozen=True, slots=True)
class Invalid:
    problems: list[Problem]
    status: int = 400


@dataclass(frozen=True, slots=True)
class Conflict:
    job_id: str


@dataclass(frozen=True, slots=True)
class JobView:
    summary: JobSummary
    operations: list[OperationRecord]


def _submitted(result: Accepted | Invalid | Conflict) -> Mapping[str, str | int | None]:
    """What the `job.submit` span says about the door's answer (never what the caller sent)."""
    if isinstance(result, Accepted):
        outcome = "accepted" if result.created else "existing"
        return {"jobId": result.summary.job_id, "operationCount": result.summary.total, "outcome": outcome}
    if isinstance(result, Conflict):
        return {"jobId": result.job_id, "outcome": "conflict"}
    return {"outcome": "invalid", "httpStatus": result.status, "problemCount": len(result.problems)}


class ProvisioningService:
    def __init__(
        self,
        settings: Settings,
        store: ResultStore,
        queues: WorkQueues,
        processor: Processor,
        coalescer: BatchCoalescer,
        *,
        watch_bulk: bool = True,
    ) -> None:
        self.settings = settings
        self._watch_bulk = watch_bulk
        self._coalescer = coalescer
        self.store = store
        self.queues = queues
        self._bulk: BulkPickup | None = None
        self._processor = processor
        self._close_graph: tuple[httpx.AsyncClient, TokenCredential] | None = None
        self._pace_store: TablePaceStore | None = None
        self.callback_hosts = AllowedHosts.parse(settings.callback_allowed_hosts)
        self._callbacks: CallbackDesk | None = None
        self._subscriptions: SubscriptionDesk | None = None

    @property
    def callbacks(self) -> CallbackDesk:
        """Jobs' callbacks: armed by the HTTP door, delivered from the callback queue."""
        if self._callbacks is None:
            raise RuntimeError("callbacks are wired by ProvisioningService.create")
        return self._callbacks

    @property
    def subscriptions(self) -> SubscriptionDesk:
        """The trigger's subscriptions: made over HTTP, fed by the doors that accept jobs."""
        if self._subscriptions is None:
            raise RuntimeError("subscriptions are wired by ProvisioningService.create")
        return self._subscriptions

    @property
    def bulk(self) -> BulkPickup:
        """The bulk CSV pickup, loaded (with the blob SDK) only where it is used. Its files'
        jobs are offered to the trigger's subscribers unless `watch_bulk` is off (the operator
        CLI, whose people may not read the subscriptions)."""
        if self._bulk is None:
            from batching.bulk.current import UserDirectory
            from batching.bulk.pickup import BulkPickup

            directory = UserDirectory(
                self._coalescer,
                self.settings.graph_base_url,
                graph_hosts=object_url_hosts(self.settings.graph_base_url),
            )
            self._bulk = BulkPickup(
                container_client(self.settings, self.settings.bulk_container),
                self.store,
                self.queues.bulk,
                wait_seconds=self.settings.bulk_wait_seconds,
                directory=directory,
                change_detection=self.settings.bulk_change_detection,
                watch=self.subscriptions.watch if self._watch_bulk else None,
            )
        return self._bulk

    @property
    def queue(self) -> WorkQueue:
        """The public provisioning queue: producers' jobs."""
        return self.queues.provisioning

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        graph_transport: httpx.AsyncBaseTransport | None = None,
        watch_bulk: bool = True,
    ) -> ProvisioningService:
        """Wire real clients from settings; tests may swap only the Graph transport.
        `watch_bulk`: bulk files' jobs are offered to the trigger's subscribers (the app's
        timer; not the operator CLI, whose people may not read the subscriptions)."""
        base_url = check_graph_endpoint(settings.graph_base_url, settings.graph_credential)
        credential = build_credential(settings)
        http = build_http_client(
            base_url,
            GraphTokenAuth(credential, base_url),
            timeout_seconds=settings.graph_timeout_seconds,
            transport=graph_transport,
        )
        store = ResultStore(table_client(settings, settings.results_table))
        queues = WorkQueues(
            provisioning=_work_queue(settings, settings.provisioning_queue),
            work=_work_queue(settings, settings.work_queue),
            bulk=_work_queue(settings, settings.bulk_queue),
        )
        policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_seconds=settings.backoff_base_seconds,
            cap_seconds=settings.backoff_max_seconds,
            throttle_max_wait_seconds=settings.throttle_max_wait_seconds,
            local_wait_seconds=settings.throttle_local_wait_seconds,
        )
        pace_store = TablePaceStore(table_client(settings, settings.pacing_table))
        pacer = Pacer(pace_store, budget(settings), fallback_share=settings.pacing_fallback_share)
        coalescer = BatchCoalescer(
            GraphBatchClient(http),
            pacer=pacer,
            max_concurrent_batches=settings.graph_max_concurrent_batches,
            linger_seconds=settings.batch_linger_seconds,
        )
        replication = ReplicationPolicy(
            first_delay_seconds=settings.replication_retry_seconds,
            max_wait_seconds=settings.replication_max_wait_seconds,
        )
        processor = Processor(
            coalescer,
            store,
            queues,
            policy,
            replication,
            graph_hosts=object_url_hosts(settings.graph_base_url),
            claim_timeout_seconds=settings.claim_timeout_seconds,
            operations=FollowPolicy(
                settings.teams_operation_poll_seconds, settings.teams_operation_max_wait_seconds
            ),
        )
        service = cls(settings, store, queues, processor, coalescer, watch_bulk=watch_bulk)
        service._close_graph = (http, credential)
        service._pace_store = pace_store
        telemetry.watch(pacer=pacer, coalescer=coalescer)
        callback_queue = CallbackQueue(queue_client(settings, settings.callback_queue, base64=False))
        service._callbacks = _callback_desk(settings, store, service, policy, callback_queue)
        service._subscriptions = SubscriptionDesk(
            SubscriptionStore(table_client(settings, settings.subscriptions_table)),
            callback_queue,
            service._callbacks,
            service.job,
            service.callback_hosts,
        )
        return service

    async def ensure_resources(self) -> None:
        await self.store.ensure_table()
        for queue in self.queues.all():
            await queue.ensure_queues()
        if self._callbacks is not None:
            await self._callbacks.ensure()
        if self._subscriptions is not None:
            await self._subscriptions.ensure()

    async def aclose(self) -> None:
        await self.store.close()
        for queue in self.queues.all():
            await queue.close()
        if self._bulk is not None:
            await self._bulk.close()
        if self._pace_store is not None:
            await self._pace_store.close()
        if self._callbacks is not None:
            await self._callbacks.aclose()
        if self._subscriptions is not None:
            await self._subscriptions.aclose()
        if self._close_graph is not None:
            http, credential = self._close_graph
            await http.aclose()
            await credential.close()

    # --- HTTP door -------------------------------------------------------------------------

    @telemetry.spanned("job.submit", describe=_submitted)
    async def submit(
        self,
        raw: bytes,
        *,
        action: str | None = None,
        base_url: str | None = None,
        callback_required: bool = False,
        watched: bool = False,
    ) -> Accepted | Invalid | Conflict:
        """Validate, record and enqueue a job; the same jobId and body again is the same job.
        `action` names the connector action that built it, for its result's own fields.
        `base_url` is the app's own, as the HTTP caller reached it: only a caller that gives
        it may set a `callbackUrl` (armed here, its status URL under that base). `watched`: the
        job is offered to the trigger's subscribers once done (the HTTP doors; not the
        operator CLI, whose people may not read the subscriptions)."""
        hosts = self.callback_hosts if base_url is not None else None
        parsed = parse_job(raw, callback_hosts=hosts, callback_required=callback_required)
        if isinstance(parsed, Rejection):
            return Invalid(parsed.problems)
        job = parsed
        try:
            messages = pack_work(job.job_id, job.correlation_id, job.work_items(), priority="high")
        except WorkTooLarge as error:
            return Invalid([Problem("operations", str(error))], status=413)

        summary = _new_summary(job, source="http")
        summary.action = action
        if not await self.store.create_summary(summary):
            existing = await self.store.get_summary(job.job_id)
            if existing is None or existing.body_hash != job.body_hash:
                return Conflict(job.job_id)
            if existing.enqueued:
                await self._arm_callback(job, existing, base_url)
                return Accepted(existing, created=False)
            summary = existing  # recorded earlier but never queued: finish that now
        # No Pending rows: each operation's row is written once, when it finishes (it carries
        # its place in the job), so a flow's job costs one write before its work is queued.
        await asyncio.gather(*(self.queues.work.send(message) for message in messages))
        if watched:
            await self.subscriptions.watch(job.job_id, summary.pending)
        await self.store.mark_enqueued(job.job_id)
        summary.enqueued = True
        await self._arm_callback(job, summary, base_url)
        return Accepted(summary, created=True)

    async def _arm_callback(self, job: Job, summary: JobSummary, base_url: str | None) -> None:
        """A job with a callbackUrl gets its results there once done. Armed after the job is
        queued: a caller whose submission failed before the answer submits again, and the
        same job and URL again is the same callback. The status URL in the results carries no
        function key (the receiver is no caller of this API)."""
        if job.callback_url is None or base_url is None:
            return
        status_url = f"{base_url.rstrip('/')}/api/jobs/{job.job_id}"
        await self.callbacks.arm(job.job_id, job.callback_url, status_url, summary.pending)

    async def job(self, job_id: str) -> JobView | None:
        summary = await self.store.get_summary(job_id)
        if summary is None:
            return None
        # Counted from the statuses alone: a flow polls a running job often, and only the
        # final answer carries every operation's result.
        summary.counts = await self.store.count_statuses(job_id)
        if not summary.done:
            return JobView(summary, [])
        return JobView(summary, await self.store.operations(job_id))

    # --- queue door ------------------------------------------------------------------------

    async def handle_queue_message(
        self,
        text: str,
        message_id: str,
        dequeue_count: int,
        *,
        source: QueueSource = "jobs",
        inserted_on: datetime | None = None,
    ) -> None:
        """Run a message of the provisioning queue (a producer's job) or of one of the app's
        own queues (work messages), and more queued work beside it so batches fill up.

        Bad input is recorded as Rejected and poisoned. Extra messages stay leased while their
        work waits for Graph's pace, and are deleted only after it is recorded or re-enqueued;
        if this invocation dies they reappear.
        """
        door = self._door(source)
        async with self._coalescer.preparing():
            own = await self._received(door, source, text, message_id, dequeue_count, inserted_on)
            extras, taken = await self._take_extras(door, source, len(own.items) if own else 0)
        units = [own] if own else []
        units.extend(unit for unit in taken if unit is not None)
        finished = [extra for extra, unit in zip(extras, taken, strict=True) if unit is None]
        for extra in finished:
            await door.delete(extra)
        leases = ExtraLeases(
            door, [e for e in extras if e not in finished], self.settings.queue_extra_lease_seconds
        )
        try:
            async with leases:
                await self._processor.run(units)
        except Exception as error:
            # The host poisons the message after this delivery: its operations end Failed.
            if own is not None and dequeue_count >= self.settings.max_dequeue_count:
                await self._fail_unfinished(
                    own, f"processing failed {dequeue_count} times ({type(error).__name__})"
                )
            raise
        await leases.release()

    async def handle_callback_message(self, text: str, dequeue_count: int) -> None:
        """A message of the callback queue: deliver a finished job's results (to the webhook
        action's flow, or to the trigger's subscribers), or wait more."""
        if await self.subscriptions.handle(text, dequeue_count, self.settings.max_dequeue_count):
            return
        await self.callbacks.handle(text, dequeue_count, self.settings.max_dequeue_count)

    def _door(self, source: QueueSource) -> WorkQueue:
        if source == "work":
            return self.queues.work
        return self.queues.bulk if source == "bulk" else self.queues.provisioning

    async def _take_extras(
        self, door: WorkQueue, source: QueueSource, in_hand: int
    ) -> tuple[list[TakenMessage], list[WorkUnit | None]]:
        """More messages to fill batches, a page at a time, while this process holds less work
        than the Graph budget lets the fleet send in `EXTRA_WORK_HORIZON_SECONDS`; the rest
        stays on the queue for other instances (and is never leased for long)."""
        horizon = self.settings.graph_writes_per_second * EXTRA_WORK_HORIZON_SECONDS
        held = self._coalescer.backlog + in_hand
        extras: list[TakenMessage] = []
        units: list[WorkUnit | None] = []
        while len(extras) < self.settings.queue_extra_messages and held < horizon:
            want = min(EXTRA_PAGE, self.settings.queue_extra_messages - len(extras))
            page = await door.take(want, self.settings.queue_extra_lease_seconds)
            taken = await asyncio.gather(*(self._intake_extra(door, source, extra) for extra in page))
            extras.extend(page)
            units.extend(taken)
            held += sum(len(unit.items) for unit in taken if unit is not None)
            if len(page) < want:
                break
        return extras, units

    async def _intake_extra(
        self, door: WorkQueue, source: QueueSource, extra: TakenMessage
    ) -> WorkUnit | None:
        if extra.dequeue_count > self.settings.max_dequeue_count:
            await self._give_up(door, source, extra, "it kept failing")
            return None
        return await self._received(
            door, source, extra.text, extra.id, extra.dequeue_count, extra.inserted_on
        )

    async def _received(
        self,
        door: WorkQueue,
        source: QueueSource,
        text: str,
        message_id: str,
        dequeue_count: int,
        inserted_on: datetime | None,
    ) -> WorkUnit | None:
        """`_intake`, as telemetry sees it: a `job.intake` span in the job's trace, and queue age."""
        started = telemetry.now()
        unit = await self._intake(door, source, text, message_id)
        return telemetry.received(
            unit,
            source=source,
            queue=door.name,
            dequeue_count=dequeue_count,
            inserted_on=inserted_on,
            started=started,
        )

    async def _intake(
        self, door: WorkQueue, source: QueueSource, text: str, message_id: str
    ) -> WorkUnit | None:
        """A queue message as work to run now, or None when it was rejected.

        The public queue takes jobs only; the app's own queues take its work messages only
        (producers cannot write them), and those are validated again all the same."""
        data = decode_queue_text(text)
        try:
            work = read_work_message(data)
        except ValueError as error:
            await self._reject(
                door, Rejection([Problem("body", f"malformed work message: {error}")]), text, message_id
            )
            return None
        if source != "jobs":
            if work is None:
                problem = Problem("kind", "this queue carries only the app's own work messages")
                await self._reject(door, Rejection([problem]), text, message_id)
                return None
            return WorkUnit(
                work.job_id, work.correlation_id, work.items, work.priority, work.ticket, trace=work.trace
            )
        if work is not None:
            problem = Problem("kind", "work messages are accepted only on the app's internal queue")
            await self._reject(door, Rejection([problem]), text, message_id)
            return None
        parsed = parse_job(data)
        if isinstance(parsed, Rejection):
            await self._reject(door, parsed, text, message_id)
            return None
        job = parsed
        try:  # retries travel as work messages: refuse now what could not be put back later
            pack_work(job.job_id, job.correlation_id, job.work_items())
        except WorkTooLarge as error:
            ids = [op.id for op in job.operations]
            too_large = Rejection([Problem("operations", str(error))], job.job_id, job.correlation_id, ids)
            await self._reject(door, too_large, text, message_id)
            return None
        summary = _new_summary(job, source="queue")
        summary.enqueued = True
        if not await self.store.create_job(summary, _pending_rows(job)):
            existing = await self.store.get_summary(job.job_id)
            if existing is not None and existing.body_hash != job.body_hash:
                problem = Problem("jobId", "already names a different job")
                ids = [op.id for op in job.operations]
                await self._reject(
                    door, Rejection([problem], None, job.correlation_id, ids), text, message_id
                )
                return None
        # Also for a job that existed: its first delivery may have died before it was watched
        # (a second watch sends nothing twice: each delivery is claimed).
        await self.subscriptions.watch(job.job_id, len(job.operations))
        return WorkUnit(job.job_id, job.correlation_id, job.work_items(), ticket=job_ticket(message_id))

    async def _give_up(self, door: WorkQueue, source: QueueSource, extra: TakenMessage, why: str) -> None:
        """What the host does on a last failed delivery, for a message this invocation took."""
        unit = await self._intake(door, source, extra.text, extra.id)
        if unit is not None:
            await self._fail_unfinished(unit, f"processing failed {extra.dequeue_count} times ({why})")
        await door.send_poison(extra.text)

    async def _reject(self, door: WorkQueue, rejection: Rejection, text: str, message_id: str) -> None:
        """A Rejected row per operation the message names (or a job row), and the poison queue."""
        reason = "; ".join(str(problem) for problem in rejection.problems)
        job_id = rejection.job_id
        if job_id is None or await self.store.get_summary(job_id) is not None:
            job_id = f"rejected-{message_id}"
        summary = JobSummary(
            job_id=job_id,
            total=len(rejection.operation_ids),
            body_hash=None,
            correlation_id=rejection.correlation_id,
            source="queue",
            reason=reason,
        )
        rows = [
            OperationOutcome(
                op_id=op_id,
                status=OperationStatus.REJECTED,
                method="",
                url="",
                error_code="invalidMessage",
                error_message=reason,
                seq=index,
            )
            for index, op_id in enumerate(rejection.operation_ids)
        ]
        await self.store.create_job(summary, rows)
        telemetry.count_outcomes(rows)
        await door.send_poison(text)
        log.warning("queue message %s rejected as job %s: %s", message_id, job_id, reason)

    async def _fail_unfinished(self, unit: WorkUnit, reason: str) -> None:
        statuses = await self.store.statuses(unit.job_id, {item.operation.id for item in unit.items})
        rows = [
            OperationOutcome(
                op_id=item.operation.id,
                status=OperationStatus.FAILED,
                method="",
                url="",
                attempts=item.attempts,
                seq=item.seq,
                error_code=PROCESSING_FAILED,
                error_message=f"{reason}; the message is in the poison queue",
            )
            for item in unit.items
            if not statuses.get(item.operation.id, OperationStatus.PENDING).is_final
        ]
        await self.store.record(unit.job_id, unit.correlation_id, rows)
        telemetry.count_outcomes(rows)
        await self.store.refresh_summary(unit.job_id)


def _callback_desk(
    settings: Settings,
    store: ResultStore,
    service: ProvisioningService,
    policy: RetryPolicy,
    queue: CallbackQueue,
) -> CallbackDesk:
    from batching.http_api import results_document  # the body GET /api/jobs/{id} answers with

    return CallbackDesk(
        store,
        queue,
        CallbackSender(service.callback_hosts),
        service.job,
        results_document,
        policy,
        claim_timeout_seconds=settings.claim_timeout_seconds,
        writes_per_second=settings.graph_writes_per_second,
    )


def _work_queue(settings: Settings, name: str) -> WorkQueue:
    return WorkQueue(
        queue_client(settings, name),
        queue_client(settings, f"{name}-poison", base64=False),
        queue_client(settings, name, base64=False),
    )


def budget(settings: Settings) -> dict[Lane, LaneLimit]:
    """The fleet's Graph budget: writes in batch-sized bursts, read units a second's worth."""
    units = settings.graph_read_units_per_second
    return {
        Lane.WRITES: LaneLimit(settings.graph_writes_per_second, MAX_BATCH_SIZE),
        Lane.UNITS: LaneLimit(units, max(units, 2.0 * MAX_BATCH_SIZE)),
    }


def _new_summary(job: Job, *, source: str) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        total=len(job.operations),
        body_hash=job.body_hash,
        correlation_id=job.correlation_id,
        source=source,
    )


def _pending_rows(job: Job) -> list[OperationOutcome]:
    return [
        OperationOutcome(op_id=op.id, status=OperationStatus.PENDING, method=op.method, url=op.url, seq=index)
        for index, op in enumerate(job.operations)
    ]


_shared: ProvisioningService | None = None
_shared_lock = asyncio.Lock()


async def shared_service(settings: Settings) -> ProvisioningService:
    """One service per worker process, created on first use (clients bind to the running loop)."""
    global _shared
    async with _shared_lock:
        if _shared is None:
            telemetry.configure(settings)
            service = ProvisioningService.create(settings)
            await service.ensure_resources()
            _shared = service
        return _shared


__all__ = [
    "Accepted",
    "Conflict",
    "Invalid",
    "JobView",
    "ProvisioningService",
    "shared_service",
]
