"""The Processor: plan waves, send them as `$batch` calls, record every outcome, re-enqueue
exactly the throttled operations (and what waits on them) after the delay Graph asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from batching.graph.client import BatchRequestItem, BatchResponse, GraphBatchClient, ItemResponse
from batching.models import WorkItem
from batching.planner import Key, PlannedItem, WavePlanner
from batching.records import OperationOutcome, OperationStatus
from batching.retry import RetryPolicy
from batching.store import ResultStore
from batching.workqueue import WorkQueue, pack_work

log = logging.getLogger(__name__)

FAILED_DEPENDENCY = 424


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """Operations of one job to run now (a whole job, or a retried part of one)."""

    job_id: str
    correlation_id: str | None
    items: Sequence[WorkItem]


@dataclass(slots=True)
class _WaveResult:
    """What one wave produced, per job."""

    outcomes: dict[str, list[OperationOutcome]] = field(default_factory=lambda: defaultdict(list))
    retries: dict[str, list[WorkItem]] = field(default_factory=lambda: defaultdict(list))
    retry_delay: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def retry(self, job_id: str, items: Sequence[WorkItem], delay: float) -> None:
        self.retries[job_id].extend(items)
        self.retry_delay[job_id] = max(self.retry_delay[job_id], delay)


class Processor:
    def __init__(
        self,
        graph: GraphBatchClient,
        store: ResultStore,
        queue: WorkQueue,
        policy: RetryPolicy,
        *,
        max_concurrent_batches: int = 4,
    ) -> None:
        self._graph = graph
        self._store = store
        self._queue = queue
        self._policy = policy
        self._limit = asyncio.Semaphore(max_concurrent_batches)

    async def run(self, units: Sequence[WorkUnit]) -> None:
        """Run every operation in `units` to a final row, or back onto the queue for later."""
        correlation = {unit.job_id: unit.correlation_id for unit in units}
        known: dict[Key, OperationStatus] = {}
        planned: list[PlannedItem] = []
        for unit in units:
            statuses = await self._store.statuses(unit.job_id)
            known.update({(unit.job_id, op_id): status for op_id, status in statuses.items()})
            for item in unit.items:
                # A redelivered message never re-sends what already has a final row.
                if not statuses.get(item.operation.id, OperationStatus.PENDING).is_final:
                    planned.append(PlannedItem(unit.job_id, item))

        planner = WavePlanner(planned, known)
        while True:
            wave = planner.next_wave()
            if wave.empty:
                break
            result = _WaveResult()
            for skipped in wave.skipped:
                result.outcomes[skipped.planned.job_id].append(
                    _outcome(skipped.planned, OperationStatus.SKIPPED, error_message=skipped.reason)
                )
            for waiting in wave.waiting_outside:
                self._retry_or_fail(
                    planner,
                    result,
                    waiting,
                    None,
                    retry_after=None,
                    reason="a dependency in another message has not finished yet",
                )
            responses = await asyncio.gather(*(self._send(batch) for batch in wave.batches))
            for batch, response in zip(wave.batches, responses, strict=False):
                self._classify(planner, result, batch, response)
            await self._commit(result, correlation)

        for job_id in correlation:
            await self._store.refresh_summary(job_id)

    async def _send(self, batch: list[PlannedItem]) -> BatchResponse:
        items = [
            BatchRequestItem(
                key=_wire_key(planned.key),
                method=planned.item.operation.method,
                url=planned.item.operation.url,
                headers=planned.item.operation.headers,
                body=planned.item.operation.body,
            )
            for planned in batch
        ]
        async with self._limit:
            response = await self._graph.send(items)
        log.info(
            "graph batch: %d items, status %s, client-request-id %s, request-id %s",
            len(items),
            response.status,
            response.client_request_id,
            response.request_id,
        )
        return response

    def _classify(
        self, planner: WavePlanner, result: _WaveResult, batch: list[PlannedItem], response: BatchResponse
    ) -> None:
        for planned in batch:
            item = response.items.get(_wire_key(planned.key))
            if item is None:  # the batch call itself failed: every item shares its fate
                item = ItemResponse(
                    response.status,
                    response.headers,
                    {"error": {"code": f"batch{response.status}", "message": response.error}},
                    response.request_id,
                )
            attempts = planned.item.attempts + 1
            if 200 <= item.status < 300:
                planner.settle(planned.key, OperationStatus.SUCCEEDED)
                result.outcomes[planned.job_id].append(
                    _outcome(planned, OperationStatus.SUCCEEDED, attempts=attempts, response=item)
                )
            elif self._policy.is_transient(item.status) or item.status == FAILED_DEPENDENCY:
                self._retry_or_fail(planner, result, planned, item, retry_after=item.retry_after)
            else:
                planner.settle(planned.key, OperationStatus.FAILED)
                result.outcomes[planned.job_id].append(
                    _outcome(planned, OperationStatus.FAILED, attempts=attempts, response=item)
                )

    def _retry_or_fail(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        item: ItemResponse | None,
        *,
        retry_after: str | None,
        reason: str | None = None,
    ) -> None:
        attempts = planned.item.attempts + 1
        if self._policy.exhausted(attempts):
            planner.settle(planned.key, OperationStatus.FAILED)
            message = (reason or "still throttled or unavailable") + f" after {attempts} attempts"
            result.outcomes[planned.job_id].append(
                _outcome(
                    planned, OperationStatus.FAILED, attempts=attempts, response=item, error_message=message
                )
            )
            return
        delay = self._policy.delay(attempts, retry_after)
        waiting = planner.withdraw(planned.key)
        result.retry(
            planned.job_id,
            [WorkItem(operation=planned.item.operation, attempts=attempts)] + [w.item for w in waiting],
            delay,
        )
        result.outcomes[planned.job_id].append(
            _outcome(
                planned,
                OperationStatus.PENDING,
                attempts=attempts,
                response=item,
                error_message=f"{reason or 'throttled'}; retrying in {delay:.1f} s",
            )
        )

    async def _commit(self, result: _WaveResult, correlation: dict[str, str | None]) -> None:
        """Re-enqueue first, then record: the message in hand still covers a crash in between."""
        for job_id, items in result.retries.items():
            for message in pack_work(job_id, correlation[job_id], items):
                await self._queue.send(message, delay_seconds=result.retry_delay[job_id])
            log.info(
                "job %s: %d operations re-enqueued, delay %.1f s",
                job_id,
                len(items),
                result.retry_delay[job_id],
            )
        for job_id, outcomes in result.outcomes.items():
            await self._store.record(job_id, correlation[job_id], outcomes)


def _wire_key(key: Key) -> str:
    return f"{key[0]}\n{key[1]}"


def _outcome(
    planned: PlannedItem,
    status: OperationStatus,
    *,
    attempts: int | None = None,
    response: ItemResponse | None = None,
    error_message: str | None = None,
) -> OperationOutcome:
    operation = planned.item.operation
    failed = response is not None and not 200 <= response.status < 300
    return OperationOutcome(
        op_id=operation.id,
        status=status,
        method=operation.method,
        url=operation.url,
        attempts=planned.item.attempts if attempts is None else attempts,
        http_status=response.status if response is not None else None,
        response_body=response.body if response is not None else None,
        error_code=response.error_code if failed and response is not None else None,
        error_message=error_message or (response.error_message if failed and response is not None else None),
        graph_request_id=response.request_id if response is not None else None,
    )
