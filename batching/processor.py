"""The Processor: plan waves, send them through the shared coalescer, record every outcome,
and put back on the queue exactly what must wait (throttled, or not yet replicated) with
the delay it needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from pydantic import JsonValue

from batching.allowlist import GRAPH_HOSTS, sendable_problems
from batching.classify import Verdict, classify
from batching.coalescer import BatchCoalescer
from batching.graph.client import BatchRequestItem, ItemResponse
from batching.graph.throttling import Priority
from batching.models import MAX_OPERATIONS_PER_SUBMISSION, Operation, WorkItem, WorkPriority
from batching.planner import MAX_BATCH_SIZE, Key, PlannedItem, WavePlanner
from batching.records import OperationOutcome, OperationStatus
from batching.references import UnresolvedReference, has_references, resolve
from batching.retry import RetryPolicy
from batching.store import ResultStore
from batching.workqueue import WorkQueues, pack_work

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """Operations of one job to run now (a whole job, or a retried part of one)."""

    job_id: str
    correlation_id: str | None
    items: Sequence[WorkItem]
    priority: WorkPriority = "normal"


@dataclass(frozen=True, slots=True)
class ReplicationPolicy:
    """How long to wait for Graph to replicate an object this job just created."""

    first_delay_seconds: float = 10.0
    max_wait_seconds: float = 900.0

    def next_delay(self, waited: float) -> float | None:
        delay = max(self.first_delay_seconds, waited)  # 10, 10, 20, 40, ... seconds
        return delay if waited + delay <= self.max_wait_seconds else None


@dataclass(slots=True)
class _WaveResult:
    outcomes: dict[str, list[OperationOutcome]] = field(default_factory=lambda: defaultdict(list))
    retries: dict[str, list[WorkItem]] = field(default_factory=lambda: defaultdict(list))
    retry_delay: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def retry(self, job_id: str, items: Sequence[WorkItem], delay: float) -> None:
        self.retries[job_id].extend(items)
        self.retry_delay[job_id] = max(self.retry_delay[job_id], delay)


_SEP: Final = "\n"


class _NotSendable(Exception):
    """An operation that must end Failed without being sent, and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Processor:
    def __init__(
        self,
        coalescer: BatchCoalescer,
        store: ResultStore,
        queues: WorkQueues,
        policy: RetryPolicy,
        replication: ReplicationPolicy | None = None,
        *,
        graph_hosts: frozenset[str] = GRAPH_HOSTS,
    ) -> None:
        self._coalescer = coalescer
        self._graph_hosts = graph_hosts  # hosts object URLs (`@odata.id`) may name
        self._store = store
        self._queues = queues
        self._policy = policy
        self._replication = replication or ReplicationPolicy()

    async def run(self, units: Sequence[WorkUnit]) -> None:
        """Run every operation in `units` to a final row, or back onto the queue for later."""
        async with self._coalescer.preparing():  # partial batches wait for this run's work
            await self._run(units)

    async def _run(self, units: Sequence[WorkUnit]) -> None:
        correlation = {unit.job_id: unit.correlation_id for unit in units}
        priority = {unit.job_id: unit.priority for unit in units}
        known: dict[Key, OperationStatus] = {}
        planned: list[PlannedItem] = []
        in_play: dict[str, set[str]] = defaultdict(set)
        for unit in units:  # one read per job, however many of its messages are in hand
            in_play[unit.job_id] |= _ids_in_play(unit)
        read = await asyncio.gather(*(self._store.statuses(job_id, ids) for job_id, ids in in_play.items()))
        by_job = dict(zip(in_play, read, strict=True))
        for unit in units:
            statuses = by_job[unit.job_id]
            known.update({(unit.job_id, op_id): status for op_id, status in statuses.items()})
            for item in unit.items:
                # A redelivered message never re-sends what already has a final row.
                if not statuses.get(item.operation.id, OperationStatus.PENDING).is_final:
                    planned.append(PlannedItem(unit.job_id, item))
        outputs = await self._earlier_outputs(planned)

        planner = WavePlanner(planned, known)
        while not (wave := planner.next_wave()).empty:
            result = _WaveResult()
            for skipped in wave.skipped:
                result.outcomes[skipped.planned.job_id].append(
                    _outcome(skipped.planned, OperationStatus.SKIPPED, error_message=skipped.reason)
                )
            for waiting in wave.waiting_outside:
                self._retry_or_fail(
                    planner, result, waiting, None, reason="a dependency has not finished yet"
                )

            ready: dict[str, tuple[PlannedItem, Operation]] = {}
            for planned_item in (p for batch in wave.batches for p in batch):
                try:
                    operation = self._sendable(planned_item, outputs)
                except _NotSendable as refused:
                    planner.settle(planned_item.key, OperationStatus.FAILED)
                    result.outcomes[planned_item.job_id].append(
                        _outcome(
                            planned_item,
                            OperationStatus.FAILED,
                            error_code=refused.code,
                            error_message=refused.message,
                        )
                    )
                    continue
                ready[_wire_key(planned_item.key)] = (planned_item, operation)

            await self._commit(result, correlation, priority)
            # Each batch-sized part is settled and recorded as soon as its answers are in, so
            # results appear while the rest of the wave still waits for Graph's pace.
            async with self._coalescer.waiting():
                done = await asyncio.gather(
                    *(
                        self._send_part(planner, outputs, part, correlation, priority)
                        for part in _parts(ready, MAX_BATCH_SIZE)
                    ),
                    return_exceptions=True,
                )
            # A part that could not be recorded fails the run, but only once every other part
            # has recorded what Graph did (the message comes back; recorded work is not re-sent).
            for failure in done:
                if isinstance(failure, BaseException):
                    raise failure

        await asyncio.gather(
            *(
                self._store.refresh_summary(job_id, up_to=MAX_OPERATIONS_PER_SUBMISSION)
                for job_id in correlation
            )
        )

    async def _send_part(
        self,
        planner: WavePlanner,
        outputs: dict[Key, JsonValue],
        part: dict[str, tuple[PlannedItem, Operation]],
        correlation: dict[str, str | None],
        priority: dict[str, WorkPriority],
    ) -> None:
        result = _WaveResult()
        answers = await self._coalescer.send(
            [BatchRequestItem(k, op.method, op.url, op.headers, op.body) for k, (_, op) in part.items()],
            priority={k: Priority.named(priority[p.job_id]) for k, (p, _) in part.items()},
        )
        lookups: dict[str, tuple[PlannedItem, ItemResponse]] = {}
        for key, (planned_item, _) in part.items():
            answer = answers[key]
            verdict = classify(planned_item.item, answer, self._policy)
            if verdict is Verdict.USER_EXISTS:
                lookups[key] = (planned_item, answer)
                continue
            self._settle(planner, result, outputs, planned_item, answer, verdict)
        if lookups:
            await self._look_up_existing_users(planner, result, outputs, part, lookups, priority)
        await self._commit(result, correlation, priority)

    def _settle(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        outputs: dict[Key, JsonValue],
        planned: PlannedItem,
        answer: ItemResponse,
        verdict: Verdict,
    ) -> None:
        attempts = planned.item.attempts + 1
        if verdict in (Verdict.SUCCEEDED, Verdict.ALREADY_EXISTS):
            planner.settle(planned.key, OperationStatus.SUCCEEDED)
            outputs[planned.key] = answer.body
            note = "already existed" if verdict is Verdict.ALREADY_EXISTS else None
            result.outcomes[planned.job_id].append(
                _outcome(planned, OperationStatus.SUCCEEDED, attempts=attempts, response=answer, note=note)
            )
        elif verdict is Verdict.THROTTLED:
            self._wait_for_graph(planner, result, planned, answer)
        elif verdict is Verdict.TRANSIENT:
            self._retry_or_fail(planner, result, planned, answer)
        elif verdict is Verdict.NOT_REPLICATED:
            self._wait_for_replication(planner, result, planned, answer)
        else:
            planner.settle(planned.key, OperationStatus.FAILED)
            result.outcomes[planned.job_id].append(
                _outcome(planned, OperationStatus.FAILED, attempts=attempts, response=answer)
            )

    async def _look_up_existing_users(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        outputs: dict[Key, JsonValue],
        ready: dict[str, tuple[PlannedItem, Operation]],
        conflicts: dict[str, tuple[PlannedItem, ItemResponse]],
        priority: dict[str, WorkPriority],
    ) -> None:
        """A user create that Graph says exists succeeded before: fetch it so references resolve.

        The lookup is a request the app makes on its own, so it passes the same gate as any
        operation; one that would not is not sent, and Graph's conflict stands."""
        requests = []
        for key, (planned, conflict) in list(conflicts.items()):
            body = ready[key][1].body
            upn = body.get("userPrincipalName") if isinstance(body, dict) else None
            url = f"/users/{quote(str(upn), safe='@')}"
            if sendable_problems("GET", url, {}, None, graph_hosts=self._graph_hosts):
                self._settle(planner, result, outputs, planned, conflict, Verdict.FAILED)
                del conflicts[key]
                continue
            requests.append(BatchRequestItem(key, "GET", url))
        found = await self._coalescer.send(
            requests,
            priority={
                key: Priority.named(priority[planned.job_id]) for key, (planned, _) in conflicts.items()
            },
        )
        for key, (planned, conflict) in conflicts.items():
            answer = found[key]
            if 200 <= answer.status < 300:
                self._settle(planner, result, outputs, planned, answer, Verdict.ALREADY_EXISTS)
            else:  # cannot confirm it is ours: report Graph's conflict as it was
                self._settle(planner, result, outputs, planned, conflict, Verdict.FAILED)

    def _retry_or_fail(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        answer: ItemResponse | None,
        *,
        reason: str = "throttled or unavailable",
    ) -> None:
        attempts = planned.item.attempts + 1
        if self._policy.exhausted(attempts - planned.item.throttled):
            self._give_up(planner, result, planned, answer, f"{reason} after {attempts} attempts")
            return
        delay = self._policy.delay(attempts, answer.retry_after if answer else None)
        self._put_back(
            planner,
            result,
            planned,
            answer,
            planned.item.model_copy(update={"attempts": attempts}),
            delay,
            f"{reason}; retrying in {delay:.1f} s",
        )

    def _wait_for_graph(
        self, planner: WavePlanner, result: _WaveResult, planned: PlannedItem, answer: ItemResponse
    ) -> None:
        """A 429: wait as long as Graph asks. A short wait is taken here (the pacer holds every
        send until then, on every instance); a long one goes back to the queue, delayed. Only a
        wait longer than the time bound in all makes the operation Failed."""
        now = time.time()
        since = planned.item.throttled_since if planned.item.throttled_since is not None else now
        retry = planned.item.model_copy(
            update={
                "attempts": planned.item.attempts + 1,
                "throttled": planned.item.throttled + 1,
                "throttled_since": since,
            }
        )
        if self._policy.waited_too_long(since, now):
            waited = f"throttled by Graph for {now - since:.0f} s, longer than the time bound"
            self._give_up(planner, result, planned, answer, waited)
            return
        delay = self._policy.delay(retry.throttled, answer.retry_after)
        if delay <= self._policy.local_wait_seconds:
            planner.reopen(PlannedItem(planned.job_id, retry))
            return
        self._put_back(
            planner, result, planned, answer, retry, delay, f"throttled by Graph; retrying in {delay:.1f} s"
        )

    def _wait_for_replication(
        self, planner: WavePlanner, result: _WaveResult, planned: PlannedItem, answer: ItemResponse
    ) -> None:
        attempts = planned.item.attempts + 1
        waited = planned.item.replication_waited
        delay = self._replication.next_delay(waited)
        if delay is None:
            message = f"still not found after waiting {waited:.0f} s for replication: "
            self._give_up(
                planner, result, planned, answer, message + (answer.error_message or str(answer.status))
            )
            return
        retry = planned.item.model_copy(update={"attempts": attempts, "replication_waited": waited + delay})
        self._put_back(
            planner,
            result,
            planned,
            answer,
            retry,
            delay,
            f"object created earlier in this job not replicated yet; retrying in {delay:.0f} s",
        )

    @staticmethod
    def _give_up(
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        answer: ItemResponse | None,
        message: str,
    ) -> None:
        """A retry budget ran out: Failed, with Graph's last answer and why."""
        planner.settle(planned.key, OperationStatus.FAILED)
        attempts = planned.item.attempts + 1
        result.outcomes[planned.job_id].append(
            _outcome(
                planned, OperationStatus.FAILED, attempts=attempts, response=answer, error_message=message
            )
        )

    def _put_back(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        answer: ItemResponse | None,
        retry: WorkItem,
        delay: float,
        message: str,
    ) -> None:
        """Re-enqueue the item with everything that waits on it; record it as still Pending."""
        waiting = planner.withdraw(planned.key)
        result.retry(planned.job_id, [retry, *(w.item for w in waiting)], delay)
        result.outcomes[planned.job_id].append(
            _outcome(
                planned,
                OperationStatus.PENDING,
                attempts=retry.attempts,
                response=answer,
                error_message=message,
            )
        )

    def _sendable(self, planned: PlannedItem, outputs: dict[Key, JsonValue]) -> Operation:
        """The operation as it will be sent: references resolved, and on the allow-list.

        The allow-list is checked here again, whatever door the work came through: a work
        message written to the queue by hand, or a reference that resolved to a new path.
        """
        operation = planned.item.operation
        if has_references(operation):
            job_outputs = {
                op_id: value for (job_id, op_id), value in outputs.items() if job_id == planned.job_id
            }
            try:
                operation = resolve(operation, job_outputs)
            except UnresolvedReference as error:
                raise _NotSendable("unresolvedReference", str(error)) from error
        problems = sendable_problems(
            operation.method, operation.url, operation.headers, operation.body, graph_hosts=self._graph_hosts
        )
        if problems:
            raise _NotSendable("operationNotAllowed", "; ".join(problems))
        return operation

    async def _earlier_outputs(self, planned: list[PlannedItem]) -> dict[Key, JsonValue]:
        """Responses of operations that finished in earlier runs and are referenced now."""
        wanted: dict[str, set[str]] = defaultdict(set)
        in_hand = {p.key for p in planned}
        for item in planned:
            if has_references(item.item.operation):
                for dep in item.item.operation.depends_on:
                    if (item.job_id, dep) not in in_hand:
                        wanted[item.job_id].add(dep)
        outputs: dict[Key, JsonValue] = {}
        for job_id, op_ids in wanted.items():
            for op_id, body in (await self._store.outputs(job_id, op_ids)).items():
                outputs[(job_id, op_id)] = body
        return outputs

    async def _commit(
        self, result: _WaveResult, correlation: dict[str, str | None], priority: dict[str, WorkPriority]
    ) -> None:
        """Re-enqueue first, then record: the message in hand still covers a crash in between."""
        for job_id, items in result.retries.items():
            for message in pack_work(job_id, correlation[job_id], items, priority=priority[job_id]):
                await self._queues.for_priority(priority[job_id]).send(
                    message, delay_seconds=result.retry_delay[job_id]
                )
            log.info(
                "job %s: %d operations re-enqueued, delay %.1f s",
                job_id,
                len(items),
                result.retry_delay[job_id],
            )
        await asyncio.gather(
            *(
                self._store.record(job_id, correlation[job_id], outcomes)
                for job_id, outcomes in result.outcomes.items()
            )
        )


def _parts(
    ready: dict[str, tuple[PlannedItem, Operation]], size: int
) -> list[dict[str, tuple[PlannedItem, Operation]]]:
    keys = list(ready)
    return [{key: ready[key] for key in keys[start : start + size]} for start in range(0, len(keys), size)]


def _ids_in_play(unit: WorkUnit) -> set[str]:
    """The unit's operations and what they depend on: all whose status this run needs."""
    ids = {item.operation.id for item in unit.items}
    for item in unit.items:
        ids.update(item.operation.depends_on)
    return ids


def _wire_key(key: Key) -> str:
    return f"{key[0]}{_SEP}{key[1]}"


def _outcome(
    planned: PlannedItem,
    status: OperationStatus,
    *,
    attempts: int | None = None,
    response: ItemResponse | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    note: str | None = None,
) -> OperationOutcome:
    operation = planned.item.operation
    failed = (
        response is not None and not 200 <= response.status < 300 and status is not OperationStatus.SUCCEEDED
    )
    return OperationOutcome(
        op_id=operation.id,
        status=status,
        method=operation.method,
        url=operation.url,
        attempts=planned.item.attempts if attempts is None else attempts,
        http_status=response.status if response is not None else None,
        response_body=response.body if response is not None else None,
        error_code=error_code or (response.error_code if failed and response is not None else None),
        error_message=error_message or (response.error_message if failed and response is not None else None),
        graph_request_id=response.request_id if response is not None else None,
        note=note,
        seq=planned.item.seq,
    )
