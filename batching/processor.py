"""The Processor: plan waves, send them through the shared coalescer, record every outcome,
and put back on the queue exactly what must wait (throttled, or not yet replicated) with
the delay it needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from pydantic import JsonValue

from batching import telemetry
from batching.allowlist import GRAPH_HOSTS, sendable_problems
from batching.claims import OUTCOME_UNKNOWN, Claim, RowState, judge
from batching.classify import Verdict, classify
from batching.coalescer import BatchCoalescer
from batching.graph.async_operations import (
    AsyncOperationStatus,
    FollowPolicy,
    created_team,
    operation_from_headers,
    read_operation,
    team_from_headers,
    team_of,
)
from batching.graph.client import BatchRequestItem, ItemResponse
from batching.graph.throttling import Priority
from batching.idempotency import existing_lookup, found_object, repeatable, safe_to_resend
from batching.models import MAX_OPERATIONS_PER_SUBMISSION, MessageTrace, Operation, WorkItem, WorkPriority
from batching.planner import MAX_BATCH_SIZE, Key, PlannedItem, WavePlanner
from batching.records import OperationOutcome, OperationStatus, utcnow
from batching.references import UnresolvedReference, has_references, resolve
from batching.retry import RetryPolicy
from batching.store import ResultStore
from batching.workqueue import WorkQueues, WorkTooLarge, pack_work

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """Operations of one job to run now (a whole job, or a retried part of one)."""

    job_id: str
    correlation_id: str | None
    items: Sequence[WorkItem]
    priority: WorkPriority = "normal"
    ticket: str = field(default_factory=lambda: uuid.uuid4().hex)  # see batching.claims
    trace: MessageTrace | None = None  # where its job's trace goes on (batching.telemetry)


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
    # Work another delivery of the same message may still be sending: back under its ticket.
    deferred: dict[tuple[str, str], list[WorkItem]] = field(default_factory=lambda: defaultdict(list))
    defer_delay: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def retry(self, job_id: str, items: Sequence[WorkItem], delay: float) -> None:
        self.retries[job_id].extend(items)
        self.retry_delay[job_id] = max(self.retry_delay[job_id], delay)

    def defer(self, job_id: str, ticket: str, items: Sequence[WorkItem], delay: float) -> None:
        self.deferred[(job_id, ticket)].extend(items)
        self.defer_delay[(job_id, ticket)] = max(self.defer_delay[(job_id, ticket)], delay)


@dataclass(slots=True)
class _Claims:
    """This run's view of its operations' rows: what was read, and what it has claimed."""

    states: dict[Key, RowState] = field(default_factory=dict)
    tickets: dict[Key, str] = field(default_factory=dict)
    held: set[Key] = field(default_factory=set)


_SEP: Final = "\n"
_LOST_CLAIM_RECHECK_SECONDS: Final = 10.0
_NO_CLEAR_ANSWER_MESSAGE: Final = (
    "Graph gave no clear answer to this create, so it may or may not have made it, and it cannot "
    "be repeated safely; check before submitting it again"
)
_OUTCOME_UNKNOWN_MESSAGE: Final = (
    "the app stopped while this create was being sent, so Graph may or may not have made it, and "
    "it cannot be repeated safely; check before submitting it again"
)


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
        claim_timeout_seconds: float = 300.0,
        operations: FollowPolicy | None = None,
    ) -> None:
        self._coalescer = coalescer
        self._graph_hosts = graph_hosts  # hosts object URLs (`@odata.id`) may name
        self._store = store
        self._queues = queues
        self._policy = policy
        self._replication = replication or ReplicationPolicy()
        self._claim_timeout = claim_timeout_seconds
        self._operations = operations or FollowPolicy()

    async def run(self, units: Sequence[WorkUnit]) -> None:
        """Run every operation in `units` to a final row, or back onto the queue for later."""
        async with self._coalescer.preparing():  # partial batches wait for this run's work
            with telemetry.job_runs(units):
                await self._run(units)

    async def _run(self, units: Sequence[WorkUnit]) -> None:
        correlation = {unit.job_id: unit.correlation_id for unit in units}
        priority = {unit.job_id: unit.priority for unit in units}
        known: dict[Key, OperationStatus] = {}
        planned: dict[Key, PlannedItem] = {}
        claims = _Claims()
        in_play: dict[str, set[str]] = defaultdict(set)
        for unit in units:  # one read per job, however many of its messages are in hand
            in_play[unit.job_id] |= _ids_in_play(unit)
        read = await asyncio.gather(*(self._store.row_states(job_id, ids) for job_id, ids in in_play.items()))
        by_job = dict(zip(in_play, read, strict=True))
        for unit in units:
            states = by_job[unit.job_id]
            known.update({(unit.job_id, op): state.status for op, state in states.items() if state.etag})
            for item in unit.items:
                key = (unit.job_id, item.operation.id)
                state = states[item.operation.id]
                # A redelivered message never re-sends what already has a final row; of two
                # messages in hand with the same operation, the one its row names runs it.
                if state.status.is_final or (key in planned and state.ticket != unit.ticket):
                    continue
                planned[key] = PlannedItem(unit.job_id, item)
                claims.states[key] = state
                claims.tickets[key] = unit.ticket
        outputs = await self._earlier_outputs(list(planned.values()))

        planner = WavePlanner(planned.values(), known)
        while not (wave := planner.next_wave()).empty:
            result = _WaveResult()
            finished = await self._finished_meanwhile([s.planned for s in wave.skipped])
            for skipped in wave.skipped:
                if skipped.planned.key in finished:  # another delivery finished it: its row stands
                    continue
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
                            refused=True,
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
                        self._send_part(planner, outputs, part, claims, correlation, priority)
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
        claims: _Claims,
        correlation: dict[str, str | None],
        priority: dict[str, WorkPriority],
    ) -> None:
        result = _WaveResult()
        claimed: set[str] = set()

        async def claim(keys: Sequence[str]) -> Collection[str]:
            """Called by the coalescer once the batch may go: claimed at the last moment."""
            allowed = await self._claim(planner, result, {key: part[key] for key in keys}, claims)
            claimed.update(allowed)
            return allowed

        answers = await self._coalescer.send(
            [BatchRequestItem(k, op.method, op.url, op.headers, op.body) for k, (_, op) in part.items()],
            priority={k: Priority.named(priority[p.job_id]) for k, (p, _) in part.items()},
            claim=claim,
            traces=telemetry.traces_for((k, p.job_id) for k, (p, _) in part.items()),
        )
        lookups: dict[str, tuple[PlannedItem, ItemResponse]] = {}
        for key, (planned_item, operation) in part.items():
            if key not in claimed:  # the claim decided: another delivery's, deferred, or Failed
                continue
            answer = answers[key]
            if planned_item.item.operation_url is not None:  # reading Graph's operation on it
                self._follow(planner, result, outputs, planned_item, answer)
                continue
            verdict = classify(planned_item.item, answer, self._policy, sent=operation)
            if verdict is Verdict.EXISTS:
                lookups[key] = (planned_item, answer)
                continue
            self._settle(planner, result, outputs, planned_item, answer, verdict, operation)
        if lookups:
            await self._look_up_existing(planner, result, outputs, part, lookups, priority)
        await self._commit(result, correlation, priority)

    async def _claim(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        part: dict[str, tuple[PlannedItem, Operation]],
        claims: _Claims,
    ) -> dict[str, tuple[PlannedItem, Operation]]:
        """What of `part` (a wave) this delivery may send, each operation claimed (batching.claims).

        The rest is left to the message that answers for it, put back under this message's
        ticket to look again later, or (a create whose first send's outcome is unknown and
        that cannot be repeated safely) ends Failed."""
        sendable: dict[str, tuple[PlannedItem, Operation]] = {}
        to_claim: dict[tuple[str, str], list[str]] = defaultdict(list)
        unknown: set[str] = set()
        now = utcnow()
        for key, (planned, operation) in part.items():
            if planned.key in claims.held:  # claimed earlier in this run (a short wait for Graph)
                sendable[key] = (planned, operation)
                continue
            ticket = claims.tickets[planned.key]
            verdict = judge(claims.states[planned.key], ticket, now, self._claim_timeout)
            if verdict.claim is Claim.NOT_OURS:
                planner.withdraw(planned.key)  # its dependents travel with whoever holds it
            elif verdict.claim is Claim.DEFER:
                waiting = planner.withdraw(planned.key)
                result.defer(
                    planned.job_id, ticket, [planned.item, *(w.item for w in waiting)], verdict.wait_seconds
                )
            else:
                # A create whose earlier send's outcome is unknown and that cannot be repeated
                # safely is claimed all the same (so the decision is taken once, on the row as
                # read) and then recorded instead of sent.
                if verdict.claim is Claim.RESEND and not safe_to_resend(operation):
                    unknown.add(key)
                to_claim[(planned.job_id, ticket)].append(key)
        groups = list(to_claim.items())
        won_by_group = await asyncio.gather(
            *(
                self._store.claim(
                    job_id,
                    [
                        (
                            part[key][0].item.operation.id,
                            claims.states[part[key][0].key],
                            _outcome(part[key][0], OperationStatus.PENDING),
                        )
                        for key in keys
                    ],
                    ticket,
                )
                for (job_id, ticket), keys in groups
            )
        )
        for ((job_id, ticket), keys), won in zip(groups, won_by_group, strict=True):
            for key in keys:
                planned = part[key][0]
                if planned.item.operation.id in won and key in unknown:
                    planner.settle(planned.key, OperationStatus.FAILED)
                    result.outcomes[job_id].append(
                        _outcome(
                            planned,
                            OperationStatus.FAILED,
                            attempts=planned.item.attempts + 1,
                            error_code=OUTCOME_UNKNOWN,
                            error_message=_OUTCOME_UNKNOWN_MESSAGE,
                        )
                    )
                elif planned.item.operation.id in won:
                    claims.held.add(planned.key)
                    sendable[key] = part[key]
                else:  # another delivery wrote the row since it was read: look again later
                    waiting = planner.withdraw(planned.key)
                    result.defer(
                        job_id,
                        ticket,
                        [planned.item, *(w.item for w in waiting)],
                        _LOST_CLAIM_RECHECK_SECONDS,
                    )
        return sendable

    def _settle(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        outputs: dict[Key, JsonValue],
        planned: PlannedItem,
        answer: ItemResponse,
        verdict: Verdict,
        sent: Operation | None = None,
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
        elif verdict is Verdict.ACCEPTED:
            operation = operation_from_headers(answer.headers)
            if operation is not None:
                self._follow_later(planner, result, planned, answer, operation.status_url)
            else:  # no operation to follow: the team's id is all Graph gives
                team = team_from_headers(answer.headers) or ""
                body = created_team(team, None)
                self._settle(planner, result, outputs, planned, replace(answer, body=body), Verdict.SUCCEEDED)
        elif (
            verdict is Verdict.TRANSIENT
            and sent is not None
            and _unclear(answer)
            and not safe_to_resend(sent)
        ):
            # No answer, or a 5xx other than 503: Graph may have made it, and sending it again
            # could make a second one. Never repeated; a person checks.
            self._fail(
                planner,
                result,
                planned,
                answer,
                error_code=OUTCOME_UNKNOWN,
                error_message=_NO_CLEAR_ANSWER_MESSAGE,
            )
        elif verdict is Verdict.TRANSIENT:
            self._retry_or_fail(planner, result, planned, answer)
        elif verdict is Verdict.NOT_REPLICATED:
            self._wait_for_replication(planner, result, planned, answer)
        else:
            self._fail(planner, result, planned, answer)

    async def _look_up_existing(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        outputs: dict[Key, JsonValue],
        ready: dict[str, tuple[PlannedItem, Operation]],
        conflicts: dict[str, tuple[PlannedItem, ItemResponse]],
        priority: dict[str, WorkPriority],
    ) -> None:
        """A create that Graph says was done before succeeded then: read the object it made so
        references to it resolve (batching.idempotency).

        The lookup is a request the app makes on its own, so it passes the same gate as any
        operation; one that would not is not sent, and Graph's answer stands."""
        requests = []
        for key, (planned, conflict) in list(conflicts.items()):
            url = existing_lookup(ready[key][1], conflict)
            if url is None or sendable_problems("GET", url, {}, None, graph_hosts=self._graph_hosts):
                self._settle(planner, result, outputs, planned, conflict, Verdict.FAILED)
                del conflicts[key]
                continue
            requests.append(BatchRequestItem(key, "GET", url))
        if not requests:
            return
        found = await self._coalescer.send(
            requests,
            priority={
                key: Priority.named(priority[planned.job_id]) for key, (planned, _) in conflicts.items()
            },
            traces=telemetry.traces_for((key, planned.job_id) for key, (planned, _) in conflicts.items()),
        )
        for key, (planned, conflict) in conflicts.items():
            answer = found[key]
            existing = found_object(ready[key][1], answer) if 200 <= answer.status < 300 else None
            if existing is not None:
                self._settle(
                    planner, result, outputs, planned, replace(answer, body=existing), Verdict.ALREADY_EXISTS
                )
            elif answer.status == 429:  # the create is sent again later (it is safe to repeat)
                self._wait_for_graph(planner, result, planned, answer)
            elif answer.status == 0 or answer.status >= 500:
                self._retry_or_fail(planner, result, planned, answer, reason="could not be read back")
            else:  # cannot confirm it is ours: report Graph's answer as it was
                self._give_up(
                    planner,
                    result,
                    planned,
                    conflict,
                    "Graph reported it as done before, but reading it back answered "
                    f"{answer.status} {answer.error_code or ''}".rstrip(),
                )

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
            unclear = planned.item.maybe_done or (answer is not None and _unclear(answer))
            maybe = "; Graph may have carried out one of them" if unclear else ""
            self._give_up(planner, result, planned, answer, f"{reason} after {attempts} attempts{maybe}")
            return
        delay = self._policy.delay(attempts, answer.retry_after if answer else None)
        self._put_back(
            planner,
            result,
            planned,
            answer,
            planned.item.model_copy(
                update={
                    "attempts": attempts,
                    "maybe_done": planned.item.maybe_done or (answer is not None and _unclear(answer)),
                }
            ),
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

    def _follow(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        outputs: dict[Key, JsonValue],
        planned: PlannedItem,
        answer: ItemResponse,
    ) -> None:
        """Graph's answer to a read of the operation it runs for `planned` (batching.graph.
        async_operations): done (the team's id becomes the result), failed, or still running."""
        url = planned.item.operation_url or ""
        state = read_operation(answer.body) if 200 <= answer.status < 300 else None
        if state is not None and state.status is AsyncOperationStatus.SUCCEEDED:
            team = state.target_id or team_of(url)
            body = created_team(team, answer.body)
            self._settle(planner, result, outputs, planned, replace(answer, body=body), Verdict.SUCCEEDED)
        elif state is not None and state.status is AsyncOperationStatus.FAILED:
            self._fail(
                planner,
                result,
                planned,
                answer,
                error_code=state.error_code or "operationFailed",
                error_message=state.error_message or "Graph reported that its operation failed",
            )
        elif (state is not None and state.status.running) or answer.status == 404:
            # Running, or the operation itself not replicated yet: read it again later.
            self._follow_later(planner, result, planned, answer, url)
        elif answer.status == 429:
            self._wait_for_graph(planner, result, planned, answer)
        elif state is None and (answer.status == 0 or answer.status >= 500):
            self._retry_or_fail(
                planner,
                result,
                planned,
                answer,
                reason=f"team {team_of(url)}: its operation could not be read",
            )
        else:  # Graph took the create: never a plain failure a maker would simply submit again
            self._fail(
                planner,
                result,
                planned,
                answer,
                error_code=OUTCOME_UNKNOWN,
                error_message=f"Graph accepted it (team {team_of(url)}), but reading its operation "
                f"answered {answer.status}; check the team before submitting it again",
            )

    def _follow_later(
        self,
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        answer: ItemResponse,
        url: str,
    ) -> None:
        """Back on the queue to read Graph's operation at `url` again, never to be sent again;
        `Failed` with `outcomeUnknown` once Graph has taken longer than the policy allows."""
        waited = planned.item.operation_waited
        delay = self._operations.interval_seconds
        if waited + delay > self._operations.max_wait_seconds:
            self._fail(
                planner,
                result,
                planned,
                answer,
                error_code=OUTCOME_UNKNOWN,
                error_message=f"Graph accepted it but had not finished after {waited:.0f} s; it may "
                "still finish, so check before submitting it again",
            )
            return
        retry = planned.item.model_copy(
            update={
                "attempts": planned.item.attempts + 1,
                "operation_url": url,
                "operation_waited": waited + delay,
            }
        )
        self._put_back(
            planner,
            result,
            planned,
            answer,
            retry,
            delay,
            f"Graph accepted it and is carrying it out; checking its operation again in {delay:.0f} s",
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
        Processor._fail(planner, result, planned, answer, error_message=message)

    @staticmethod
    def _fail(
        planner: WavePlanner,
        result: _WaveResult,
        planned: PlannedItem,
        answer: ItemResponse | None,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """`planned` ends Failed on this send (Graph's answer, or the code and message given)."""
        planner.settle(planned.key, OperationStatus.FAILED)
        result.outcomes[planned.job_id].append(
            _outcome(
                planned,
                OperationStatus.FAILED,
                attempts=planned.item.attempts + 1,
                response=answer,
                error_code=error_code,
                error_message=error_message,
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
        if planned.item.operation_url is not None:  # Graph is carrying it out: read how it goes
            operation = Operation(id=operation.id, method="GET", url=planned.item.operation_url)
        elif has_references(operation):
            job_outputs = {
                op_id: value for (job_id, op_id), value in outputs.items() if job_id == planned.job_id
            }
            try:
                operation = resolve(operation, job_outputs)
            except UnresolvedReference as error:
                raise _NotSendable("unresolvedReference", str(error)) from error
        if planned.item.operation_url is None:
            operation = repeatable(planned.job_id, operation)  # the form Graph never carries out twice
        problems = sendable_problems(
            operation.method, operation.url, operation.headers, operation.body, graph_hosts=self._graph_hosts
        )
        if problems:
            raise _NotSendable("operationNotAllowed", "; ".join(problems))
        return operation

    async def _finished_meanwhile(self, planned: Sequence[PlannedItem]) -> set[Key]:
        """Which of `planned` have a final row by now: they are never recorded over (skips are
        decided without a claim, so a delivery that ran beside this one may have done them)."""
        by_job: dict[str, list[str]] = defaultdict(list)
        for item in planned:
            by_job[item.job_id].append(item.item.operation.id)
        read = await asyncio.gather(*(self._store.row_states(job_id, ids) for job_id, ids in by_job.items()))
        return {
            (job_id, op_id)
            for job_id, states in zip(by_job, read, strict=True)
            for op_id, state in states.items()
            if state.status.is_final
        }

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
        """Re-enqueue first, then record: the message in hand still covers a crash in between.

        Work put back gets a new message, and its rows are handed to that message's ticket;
        work deferred keeps the ticket its rows already name."""
        handed: dict[str, dict[str, str]] = defaultdict(dict)
        for job_id, items in result.retries.items():
            try:
                messages = pack_work(job_id, correlation[job_id], items, priority=priority[job_id])
            except WorkTooLarge as error:  # cannot wait on the queue: record, never raise
                ids = {item.operation.id for item in items}
                kept = [outcome for outcome in result.outcomes[job_id] if outcome.op_id not in ids]
                result.outcomes[job_id] = [*kept, *_unqueueable(items, str(error))]
                continue
            delay = result.retry_delay[job_id]
            with telemetry.step("job.requeue", job_id=job_id, operationCount=len(items), delaySeconds=delay):
                for message in messages:
                    await self._queues.for_priority(priority[job_id]).send(
                        message, delay_seconds=result.retry_delay[job_id]
                    )
                    handed[job_id].update({item.operation.id: message.ticket for item in message.items})
            log.info(
                "job %s: %d operations re-enqueued, delay %.1f s",
                job_id,
                len(items),
                result.retry_delay[job_id],
            )
        for (job_id, ticket), items in result.deferred.items():
            delay = result.defer_delay[(job_id, ticket)]
            with telemetry.step(
                "job.requeue", job_id=job_id, operationCount=len(items), delaySeconds=delay, reason="claimed"
            ):
                for message in pack_work(
                    job_id, correlation[job_id], items, priority=priority[job_id], ticket=ticket
                ):
                    await self._queues.for_priority(priority[job_id]).send(message, delay_seconds=delay)
            log.info(
                "job %s: %d operations claimed by an earlier delivery; looking again in %.0f s",
                job_id,
                len(items),
                delay,
            )
        await asyncio.gather(
            *(self._store.hand_over(job_id, tickets) for job_id, tickets in handed.items()),
            *(
                telemetry.recorded(job_id, rows, self._store.record(job_id, correlation[job_id], rows))
                for job_id, rows in result.outcomes.items()
            ),
        )


def _unclear(answer: ItemResponse) -> bool:
    """An answer that does not tell whether Graph carried the request out: none at all, or a
    5xx other than 503 (Graph documents 503 as unavailable, to be repeated after a delay)."""
    return answer.status == 0 or (answer.status >= 500 and answer.status != 503)


def _unqueueable(items: Sequence[WorkItem], why: str) -> list[OperationOutcome]:
    return [
        OperationOutcome(
            op_id=item.operation.id,
            status=OperationStatus.FAILED,
            method=item.operation.method,
            url=item.operation.url,
            attempts=item.attempts,
            seq=item.seq,
            error_code="retryTooLarge",
            error_message=f"could not be put back on the queue to retry: {why}",
        )
        for item in items
    ]


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
    refused: bool = False,
) -> OperationOutcome:
    """The row for `planned`; a refused operation's URL is not kept (it may be what was refused)."""
    operation = planned.item.operation
    failed = (
        response is not None and not 200 <= response.status < 300 and status is not OperationStatus.SUCCEEDED
    )
    return OperationOutcome(
        op_id=operation.id,
        status=status,
        method=operation.method,
        url="" if refused else operation.url,
        attempts=planned.item.attempts if attempts is None else attempts,
        http_status=response.status if response is not None else None,
        response_body=response.body if response is not None else None,
        error_code=error_code or (response.error_code if failed and response is not None else None),
        error_message=error_message or (response.error_message if failed and response is not None else None),
        graph_request_id=response.request_id if response is not None else None,
        note=note,
        seq=planned.item.seq,
    )
