"""BatchCoalescer: one process-wide packer of `$batch` calls, in priority order, at Graph's pace.

Every invocation running in a worker process hands its ready operations here. Batches are
filled from the highest priority first (a flow waiting on HTTP, then queue work, then bulk
updates); full batches leave as soon as the pacer allows, a partial batch waits a moment
(`linger`) for operations from other jobs, never longer than `max_wait`. What Graph says about
its limits in each answer goes to the pacer before any caller sees the answer, so a retry can
never be sent into a window Graph has just closed. A whole-batch failure is given back to each
of its items, so callers only see item answers.

A caller may pass a `claim` hook: it is called for the caller's items of each batch when the
batch is next in line for the pacer, and returns the keys that may be sent
(batching.claims); the others are answered `NOT_CLAIMED` without being sent. So a claim is
taken at the last moment, never while a batch waits behind others for Graph's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from batching import telemetry
from batching.graph.client import BatchRequestItem, BatchResponse, GraphBatchClient, ItemResponse
from batching.graph.throttling import (
    WRITE_METHODS,
    Priority,
    RequestCost,
    ThrottleSignal,
    total_cost,
)
from batching.pacing import Feedback, Lane, Pacer
from batching.planner import MAX_BATCH_SIZE

# Decides, just before a batch is sent, which of the caller's items in it may go.
ClaimHook = Callable[[Sequence[str]], Awaitable[Collection[str]]]
# The answer for an item its caller's claim hook held back: it was never sent.
NOT_CLAIMED: Final = ItemResponse(0, {}, {"error": {"code": "notClaimed", "message": "not sent"}}, None)

DEFAULT_LINGER_SECONDS: Final = 0.1
DEFAULT_MAX_WAIT_SECONDS: Final = 5.0


@dataclass(slots=True)
class _Waiting:
    item: BatchRequestItem
    priority: Priority
    answer: asyncio.Future[ItemResponse]
    since: float
    claim: ClaimHook | None = None
    trace: telemetry.JobTrace | None = None  # whose trace its batch's spans go to


class BatchCoalescer:
    def __init__(
        self,
        client: GraphBatchClient,
        *,
        pacer: Pacer | None = None,
        max_concurrent_batches: int = 4,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        self._client = client
        self._pacer = pacer
        self._linger = linger_seconds
        self._max_wait = max_wait_seconds
        self._size = batch_size
        self._limit = asyncio.Semaphore(max_concurrent_batches)
        self._waiting: dict[Priority, deque[_Waiting]] = {priority: deque() for priority in Priority}
        self._arrived = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._preparing = 0
        self.batches_sent = 0

    @property
    def backlog(self) -> int:
        """Operations handed in and not yet sent."""
        return sum(len(lane) for lane in self._waiting.values())

    @contextlib.asynccontextmanager
    async def preparing(self) -> AsyncIterator[None]:
        """Held while an invocation readies work it will send: partial batches wait for it
        (never past `max_wait`), so its operations can fill them."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1
            self._arrived.set()

    async def send(
        self,
        items: Sequence[BatchRequestItem],
        *,
        priority: Priority | Mapping[str, Priority] = Priority.NORMAL,
        caller_preparing: bool = False,
        claim: ClaimHook | None = None,
        traces: Mapping[str, telemetry.JobTrace] | None = None,
    ) -> dict[str, ItemResponse]:
        """Answers for `items` by key, once the batches holding them have been sent.
        `priority`: one for all items, or one per item key.
        `caller_preparing`: the caller holds `preparing()`; it stops counting while it waits.
        `claim`: asked per batch, just before it is sent, which of these items may go.
        `traces`: per item key, the job trace its batch's spans belong to (batching.telemetry)."""
        if not caller_preparing:
            return await self._send(items, priority, claim, traces)
        async with self.waiting():
            return await self._send(items, priority, claim, traces)

    async def send_now(
        self,
        items: Sequence[BatchRequestItem],
        *,
        priority: Priority = Priority.NORMAL,
        reserved: bool = False,
    ) -> dict[str, ItemResponse]:
        """One `$batch` of up to `batch_size` items, sent as soon as the pacer allows and never
        held back to be filled: for reads that follow one another, such as the pages of a
        listing, where each waits for the one before. `reserved`: the caller already took this
        batch's cost from the budget (`reserve`), so it is not paced again."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = [_Waiting(item, priority, loop.create_future(), now) for item in items[: self._size]]
        await self._dispatch(waiting, reserved=reserved)
        answers = await asyncio.gather(*(w.answer for w in waiting))
        return {w.item.key: answer for w, answer in zip(waiting, answers, strict=True)}

    async def reserve(self, cost: RequestCost) -> None:
        """Take `cost` from the fleet's budget now, for calls sent later with `reserved`: a
        chain of calls that each wait for the one before reserves ahead, so the budget's round
        trip is not added to every call."""
        if self._pacer is not None:
            await self._pacer.acquire(cost)

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """Held by a caller inside `preparing()` while it only waits for answers: partial
        batches stop waiting for it."""
        self._preparing -= 1
        self._arrived.set()
        try:
            yield
        finally:
            self._preparing += 1

    async def _send(
        self,
        items: Sequence[BatchRequestItem],
        priority: Priority | Mapping[str, Priority],
        claim: ClaimHook | None = None,
        traces: Mapping[str, telemetry.JobTrace] | None = None,
    ) -> dict[str, ItemResponse]:
        if not items:
            return {}
        loop = asyncio.get_running_loop()
        waiting = [
            _Waiting(
                item,
                priority if isinstance(priority, Priority) else priority[item.key],
                loop.create_future(),
                loop.time(),
                claim,
                traces.get(item.key) if traces else None,
            )
            for item in items
        ]
        for entry in waiting:
            self._waiting[entry.priority].append(entry)
        self._arrived.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run())
        answers = await asyncio.gather(*(w.answer for w in waiting))
        return {w.item.key: answer for w, answer in zip(waiting, answers, strict=True)}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.backlog:
            if self.backlog < self._size:
                self._arrived.clear()
                oldest = min(lane[0].since for lane in self._waiting.values() if lane)
                left = self._max_wait - (loop.time() - oldest)
                try:
                    await asyncio.wait_for(self._arrived.wait(), max(0.0, min(self._linger, left)))
                    continue  # more arrived: look again
                except TimeoutError:
                    if self._preparing and left > self._linger:
                        continue
            await self._dispatch(self._take(self._size))

    def _take(self, count: int) -> list[_Waiting]:
        """The next batch: highest priority first, oldest first within a priority."""
        batch: list[_Waiting] = []
        for priority in Priority:
            lane = self._waiting[priority]
            while lane and len(batch) < count:
                batch.append(lane.popleft())
        return batch

    async def _dispatch(self, batch: list[_Waiting], *, reserved: bool = False) -> None:
        # Claimed while this batch waits its own turn at the pacer (never while it waits behind
        # other batches), so the claim's round trip is hidden in the wait Graph's pace imposes.
        try:
            claimed, paced = await asyncio.gather(_claimed(batch), self._paced(batch, reserved=reserved))
        except BaseException as error:
            _fail(batch, error)
            raise
        batch = claimed
        if not batch:
            return
        await self._limit.acquire()  # at most N calls in flight; the next batch waits its turn
        task = asyncio.create_task(self._send_batch(batch, paced))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _paced(self, batch: list[_Waiting], *, reserved: bool = False) -> tuple[int, int]:
        """Wait for the pacer to let `batch` go; when the wait began and ended (for telemetry)."""
        began = telemetry.now()
        if self._pacer is not None and not reserved:
            await self._pacer.acquire(_cost(batch))
        else:
            await asyncio.sleep(0)
        return began, telemetry.now()

    async def _send_batch(self, batch: list[_Waiting], paced: tuple[int, int]) -> None:
        try:
            priority = min(w.priority for w in batch)
            sent = telemetry.now()
            response = await self._client.send([w.item for w in batch], priority=priority)
            answered = telemetry.now()
            self.batches_sent += 1
            if self._pacer is not None:
                self._pacer.observe(_feedback(batch, response))
            answers = [item_answer(response, waiting.item.key) for waiting in batch]
            for waiting, answer in zip(batch, answers, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(answer)
            if telemetry.enabled():
                telemetry.batch_answered(
                    response,
                    [(waiting.trace, answer) for waiting, answer in zip(batch, answers, strict=True)],
                    timing=telemetry.BatchTiming(*paced, sent, answered),
                    priority=priority,
                    cost=_cost(batch),
                )
        except BaseException as error:  # an unexpected failure reaches every caller, never hangs them
            _fail(batch, error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._limit.release()


async def _claimed(batch: list[_Waiting]) -> list[_Waiting]:
    """The items of `batch` their callers' claim hooks let go; the rest are answered NOT_CLAIMED."""
    hooks: dict[ClaimHook, list[_Waiting]] = {}
    for waiting in batch:
        if waiting.claim is not None:
            hooks.setdefault(waiting.claim, []).append(waiting)
    if not hooks:
        return batch
    allowed = await asyncio.gather(
        *(hook([w.item.key for w in group]) for hook, group in hooks.items()), return_exceptions=True
    )
    held: set[int] = set()
    for group, keys in zip(hooks.values(), allowed, strict=True):
        if isinstance(keys, BaseException):  # that caller's claims failed; the others still go
            _fail(group, keys)
            held.update(id(w) for w in group)
            continue
        for waiting in group:
            if waiting.item.key not in keys:
                waiting.answer.set_result(NOT_CLAIMED)
                held.add(id(waiting))
    return [w for w in batch if id(w) not in held]


def _fail(batch: list[_Waiting], error: BaseException) -> None:
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_exception(error)


def _cost(batch: Sequence[_Waiting]) -> RequestCost:
    return total_cost((w.item.method, w.item.url) for w in batch)


def _lane(method: str, signal: ThrottleSignal) -> Lane:
    if method.upper() in WRITE_METHODS and not signal.is_read_limit:
        return Lane.WRITES
    return Lane.UNITS


def _feedback(batch: Sequence[_Waiting], response: BatchResponse) -> Mapping[Lane, Feedback]:
    """Per lane: was anything throttled (and for how long), the highest usage Graph reported."""
    seen: dict[Lane, Feedback] = {}
    if response.status != 200:
        signal = ThrottleSignal.read(response.status, response.headers)
        if signal.throttled:  # the whole call was refused: every lane it used is held
            lanes = {_lane(w.item.method, signal) for w in batch} | {Lane.UNITS}
            refused = Feedback(throttled=len(batch), retry_after=signal.retry_after, answers=len(batch))
            return dict.fromkeys(lanes, refused)
        return seen
    for waiting in batch:
        answer = response.items.get(waiting.item.key)
        if answer is None:
            continue
        signal = ThrottleSignal.read(answer.status, answer.headers)
        lane = _lane(waiting.item.method, signal)
        here = Feedback(
            throttled=signal.throttled,
            retry_after=signal.retry_after,
            usage=signal.limit_percentage,
            answers=1,
        )
        seen[lane] = seen.get(lane, Feedback()).merge(here)
    return seen


def item_answer(response: BatchResponse, key: str) -> ItemResponse:
    """The item's own answer, or the whole batch's failure as the item's answer."""
    found = response.items.get(key)
    if found is not None:
        return found
    return ItemResponse(
        response.status,
        response.headers,
        {"error": {"code": f"batch{response.status}", "message": response.error}},
        response.request_id,
    )
