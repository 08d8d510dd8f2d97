"""WorkQueue: the app's own messages on a queue, and that queue's poison queue.

Three queues carry work. Producers write jobs to the public provisioning queue; only the app
writes the internal work queue (HTTP jobs and retries) and the bulk queue (bulk CSV parts and
their retries), and only those two carry work messages (Bicep grants producers nothing else).
Bulk work has its own queue so a long drain never stands in front of a job someone waits for.
A queue message holds at most 64 KiB after base64, so work is packed into messages by
dependency group: operations that depend on each other always travel together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue.aio import QueueClient

from batching import telemetry
from batching.models import MessageTrace, WorkItem, WorkMessage, WorkPriority

log = logging.getLogger(__name__)

# 64 KiB of base64 carries 48 KiB of UTF-8 JSON; leave room for the envelope.
MAX_MESSAGE_JSON_BYTES: Final = 45_000
MAX_VISIBILITY_DELAY_SECONDS: Final = 7 * 24 * 3600
# The largest trace a message may carry (batching.telemetry stamps it when it is sent).
_LARGEST_TRACE: Final = MessageTrace.model_construct(
    traceparent=f"00-{'f' * 32}-{'f' * 16}-ff", visible_at=4_102_444_799.999
)


class WorkTooLarge(ValueError):
    """A dependency group that does not fit in one queue message."""


def pack_work(
    job_id: str,
    correlation_id: str | None,
    items: Sequence[WorkItem],
    *,
    priority: WorkPriority = "normal",
    limit: int = MAX_MESSAGE_JSON_BYTES,
    ticket: str | None = None,
) -> list[WorkMessage]:
    """Work messages for `items`, each under `limit` bytes of UTF-8, dependency groups kept
    whole. Each message gets a fresh ticket (the name its claims go by), unless `ticket` is
    given: a message that continues another one's work keeps that one's ticket."""
    groups = _dependency_groups(items)
    messages: list[WorkMessage] = []
    current: list[WorkItem] = []
    current_size = 0

    def message(part: list[WorkItem]) -> WorkMessage:
        return WorkMessage(
            job_id=job_id,
            correlation_id=correlation_id,
            priority=priority,
            ticket=ticket or uuid.uuid4().hex,
            items=tuple(part),
        )

    empty = WorkMessage.model_construct(
        job_id=job_id,
        correlation_id=correlation_id,
        priority=priority,
        ticket=uuid.uuid4().hex,
        items=(),
        trace=_LARGEST_TRACE,
    )
    envelope = len(empty.model_dump_json(by_alias=True).encode())
    for group in groups:
        size = sum(len(item.model_dump_json(by_alias=True).encode()) + 1 for item in group)
        if size + envelope > limit:
            raise WorkTooLarge(
                f"{len(group)} operations depend on each other and together exceed the {limit}-byte "
                "queue message limit; split them into smaller jobs"
            )
        if current and current_size + size + envelope > limit:
            messages.append(message(current))
            current, current_size = [], 0
        current.extend(group)
        current_size += size
    if current:
        messages.append(message(current))
    return messages


def _dependency_groups(items: Sequence[WorkItem]) -> list[list[WorkItem]]:
    """Connected groups under dependsOn, in order of first appearance."""
    parent = {item.operation.id: item.operation.id for item in items}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for item in items:
        for dep in item.operation.depends_on:
            if dep in parent:
                parent[root(item.operation.id)] = root(dep)
    groups: dict[str, list[WorkItem]] = {}
    for item in items:
        groups.setdefault(root(item.operation.id), []).append(item)
    return list(groups.values())


@dataclass(frozen=True, slots=True)
class PoisonMessage:
    """A message on the poison queue, as it arrived on the provisioning queue."""

    id: str
    text: str
    dequeue_count: int
    inserted_on: datetime | None


@dataclass(frozen=True, slots=True)
class TakenMessage:
    """A message this invocation took beyond the one that triggered it (leased, not deleted)."""

    id: str
    pop_receipt: str
    text: str
    dequeue_count: int
    inserted_on: datetime | None = None


class WorkQueue:
    def __init__(self, queue: QueueClient, poison: QueueClient, receiver: QueueClient) -> None:
        self._queue = queue
        self._poison = poison
        self._receiver = receiver  # reads text as it is: producers send plain or base64 JSON

    @property
    def name(self) -> str:
        return self._queue.queue_name

    @property
    def poison_name(self) -> str:
        return self._poison.queue_name

    async def extend_lease(self, message: TakenMessage, lease_seconds: int) -> TakenMessage:
        """Keep a taken message hidden for `lease_seconds` more (it is still being worked on)."""
        updated = await self._receiver.update_message(
            message.id, message.pop_receipt, visibility_timeout=lease_seconds
        )
        return replace(message, pop_receipt=updated.pop_receipt or message.pop_receipt)

    async def take(self, count: int, lease_seconds: int) -> list[TakenMessage]:
        """Up to `count` more visible messages, hidden for `lease_seconds` until deleted."""
        taken: list[TakenMessage] = []
        while len(taken) < count:
            want = min(32, count - len(taken))
            page = [
                TakenMessage(m.id, m.pop_receipt or "", m.content, m.dequeue_count or 1, m.inserted_on)
                async for m in self._receiver.receive_messages(
                    messages_per_page=want, max_messages=want, visibility_timeout=lease_seconds
                )
            ]
            taken.extend(page)
            if len(page) < want:
                break
        return taken

    async def delete(self, message: TakenMessage) -> None:
        await self._receiver.delete_message(message.id, message.pop_receipt)

    async def ensure_queues(self) -> None:
        for client in (self._queue, self._poison):
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()

    async def close(self) -> None:
        for client in (self._queue, self._poison, self._receiver):
            await client.close()

    async def send(self, message: WorkMessage, *, delay_seconds: float = 0) -> None:
        """Enqueue; the message stays invisible for `delay_seconds` and never expires. It carries
        the current trace context, so its next delivery continues the job's trace."""
        delay = min(MAX_VISIBILITY_DELAY_SECONDS, max(0, math.ceil(delay_seconds)))
        message = telemetry.stamp(message, delay)
        await self._queue.send_message(
            message.model_dump_json(by_alias=True, exclude={"trace"} if message.trace is None else None),
            visibility_timeout=delay or None,
            time_to_live=-1,
        )

    async def send_poison(self, raw_text: str) -> None:
        """Keep a message exactly as it arrived, for inspection and replay."""
        await self._poison.send_message(raw_text, time_to_live=-1)

    async def peek_poison(self, count: int = 32) -> list[PoisonMessage]:
        """Up to 32 poison messages (the queue service's peek limit), left in place."""
        return [
            PoisonMessage(m.id, m.content, m.dequeue_count or 0, m.inserted_on)
            for m in await self._poison.peek_messages(max_messages=min(32, count))
        ]

    async def take_poison(self, lease_seconds: int) -> list[tuple[PoisonMessage, TakenMessage]]:
        """Every poison message, each hidden for `lease_seconds` until deleted or released."""
        taken: list[tuple[PoisonMessage, TakenMessage]] = []
        while True:
            page = [
                m
                async for m in self._poison.receive_messages(
                    messages_per_page=32, max_messages=32, visibility_timeout=lease_seconds
                )
            ]
            taken.extend(
                (
                    PoisonMessage(m.id, m.content, m.dequeue_count or 0, m.inserted_on),
                    TakenMessage(m.id, m.pop_receipt or "", m.content, m.dequeue_count or 1),
                )
                for m in page
            )
            if len(page) < 32:
                return taken

    async def release_poison(self, message: TakenMessage) -> None:
        """Make a taken poison message visible again, untouched."""
        await self._poison.update_message(message.id, message.pop_receipt, visibility_timeout=0)

    async def requeue_poison(self, message: TakenMessage) -> None:
        """Put a poison message's text back on the provisioning queue as it is, then drop it."""
        await self._receiver.send_message(message.text, time_to_live=-1)
        await self._poison.delete_message(message.id, message.pop_receipt)


class ExtraLeases:
    """Keeps extra messages hidden while their work runs (it may wait a while for Graph's
    pace); `messages` holds their latest pop receipts, for deleting them afterwards. Renewals
    stop between two updates, never in the middle of one, so a receipt is never lost."""

    def __init__(self, door: WorkQueue, messages: list[TakenMessage], lease_seconds: int) -> None:
        self._door = door
        self.messages = messages
        self._lease = lease_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ExtraLeases:
        if self.messages:
            self._task = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _renew(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._lease / 3)
                return
            for index, message in enumerate(self.messages):
                try:
                    self.messages[index] = await self._door.extend_lease(message, self._lease)
                except AzureError:  # the message reappears for another invocation; nothing lost
                    log.warning("could not extend the lease of queue message %s", message.id)

    async def release(self) -> None:
        """Delete the messages whose work is recorded or re-enqueued."""
        for message in self.messages:
            try:
                await self._door.delete(message)
            except AzureError:  # it reappears later; its operations are final and not re-sent
                log.warning("could not delete queue message %s; it will be seen again", message.id)


@dataclass(frozen=True, slots=True)
class WorkQueues:
    """The queues work travels on: producers' jobs on `provisioning`; the app's own work
    messages on `work`, and low-priority (bulk) work on `bulk`."""

    provisioning: WorkQueue
    work: WorkQueue
    bulk: WorkQueue

    def for_priority(self, priority: WorkPriority) -> WorkQueue:
        return self.bulk if priority == "low" else self.work

    def all(self) -> tuple[WorkQueue, ...]:
        return (self.provisioning, self.work, self.bulk)
