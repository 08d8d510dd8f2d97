"""BatchCoalescer: one process-wide packer of `$batch` calls.

Every invocation running in a worker process hands its ready operations here. Full batches of
20 leave at once; a partial batch waits a moment (`linger`) for operations from other jobs and
messages, never longer than `max_wait`. So many small messages still produce full batches.
A whole-batch failure is given back to each of its items, so callers only see item answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from batching.graph.client import BatchRequestItem, BatchResponse, GraphBatchClient, ItemResponse
from batching.planner import MAX_BATCH_SIZE

DEFAULT_LINGER_SECONDS: Final = 0.1
DEFAULT_MAX_WAIT_SECONDS: Final = 5.0


@dataclass(slots=True)
class _Waiting:
    item: BatchRequestItem
    answer: asyncio.Future[ItemResponse]
    since: float


class BatchCoalescer:
    def __init__(
        self,
        client: GraphBatchClient,
        *,
        max_concurrent_batches: int = 4,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        self._client = client
        self._linger = linger_seconds
        self._max_wait = max_wait_seconds
        self._size = batch_size
        self._limit = asyncio.Semaphore(max_concurrent_batches)
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._preparing = 0
        self.batches_sent = 0

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
        self, items: Sequence[BatchRequestItem], *, caller_preparing: bool = False
    ) -> dict[str, ItemResponse]:
        """Answers for `items` by key, once the batches holding them have been sent.
        `caller_preparing`: the caller holds `preparing()`; it stops counting while it waits."""
        if caller_preparing:
            self._preparing -= 1
        try:
            return await self._send(items)
        finally:
            if caller_preparing:
                self._preparing += 1

    async def _send(self, items: Sequence[BatchRequestItem]) -> dict[str, ItemResponse]:
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(item, loop.create_future(), loop.time()) for item in items]
        self._waiting.extend(waiting)
        self._arrived.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run())
        answers = await asyncio.gather(*(w.answer for w in waiting))
        return {w.item.key: answer for w, answer in zip(waiting, answers, strict=True)}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            while len(self._waiting) >= self._size:
                self._dispatch(self._size)
            if not self._waiting:
                return
            self._arrived.clear()
            left = self._max_wait - (loop.time() - self._waiting[0].since)
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, min(self._linger, left)))
            except TimeoutError:
                if self._preparing == 0 or left <= self._linger:
                    self._dispatch(self._size)

    def _dispatch(self, count: int) -> None:
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        task = asyncio.create_task(self._send_batch(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send_batch(self, batch: list[_Waiting]) -> None:
        try:
            async with self._limit:
                response = await self._client.send([w.item for w in batch])
            self.batches_sent += 1
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_result(item_answer(response, waiting.item.key))
        except BaseException as error:  # an unexpected failure reaches every caller, never hangs them
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(error)
            if not isinstance(error, Exception):
                raise


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
