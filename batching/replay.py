"""PoisonReplay: see what is on the poison queue, and send it back once the cause is fixed.

A replayed message keeps its text, so it keeps its jobId. What the earlier attempt left in the
results table is made ready for the new one first: a job that was rejected under its jobId is
removed (it is validated again from scratch), and operations that failed only because
processing kept crashing go back to Pending. Operations with a real result (Succeeded, or an
answer from Graph) are never sent again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from batching.intake import Rejection, decode_queue_text, parse_job, read_work_message
from batching.records import JobStatus
from batching.store import ResultStore
from batching.workqueue import PoisonMessage, WorkQueue

REPLAY_LEASE_SECONDS: Final = 120
REPLAYED_NOTE: Final = "replayed from the poison queue"
_PREVIEW_CHARS: Final = 80

MessageKind = Literal["work", "job", "invalid"]


@dataclass(frozen=True, slots=True)
class _Identity:
    kind: MessageKind
    job_id: str | None
    op_ids: tuple[str, ...]


def identify(text: str) -> _Identity:
    """What a message is, as far as its text tells (never raises)."""
    data = decode_queue_text(text)
    try:
        work = read_work_message(data)
    except ValueError:
        return _Identity("invalid", None, ())
    if work is not None:
        return _Identity("work", work.job_id, tuple(item.operation.id for item in work.items))
    parsed = parse_job(data)
    if isinstance(parsed, Rejection):
        return _Identity("invalid", parsed.job_id, tuple(parsed.operation_ids))
    return _Identity("job", parsed.job_id, tuple(op.id for op in parsed.operations))


@dataclass(frozen=True, slots=True)
class PoisonEntry:
    """One poison message as an operator sees it."""

    message_id: str
    inserted_on: datetime | None
    kind: MessageKind
    job_id: str | None
    operations: int
    job_status: str | None
    reason: str | None
    preview: str

    def to_json(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "insertedOn": self.inserted_on.isoformat() if self.inserted_on else None,
            "kind": self.kind,
            "jobId": self.job_id,
            "operations": self.operations,
            "jobStatus": self.job_status,
            "reason": self.reason,
            "preview": self.preview,
        }


class PoisonReplay:
    def __init__(self, store: ResultStore, queue: WorkQueue) -> None:
        self._store = store
        self._queue = queue

    async def entries(self) -> list[PoisonEntry]:
        return [await self._describe(message) for message in await self._queue.peek_poison()]

    async def replay(self, message_ids: Collection[str] | None = None) -> list[PoisonEntry]:
        """Send poison messages (all, or those named) back to the provisioning queue."""
        replayed: list[PoisonEntry] = []
        for message, taken in await self._queue.take_poison(REPLAY_LEASE_SECONDS):
            if message_ids is not None and message.id not in message_ids:
                await self._queue.release_poison(taken)
                continue
            await self._prepare(identify(message.text))
            await self._queue.requeue_poison(taken)
            replayed.append(await self._describe(message))
        return replayed

    async def _prepare(self, identity: _Identity) -> None:
        if identity.job_id is None:
            return
        summary = await self._store.get_summary(identity.job_id)
        if summary is None:
            return
        if summary.status is JobStatus.REJECTED and summary.body_hash is None:
            await self._store.delete_job(identity.job_id)
            return
        if await self._store.reopen(identity.job_id, identity.op_ids, REPLAYED_NOTE):
            await self._store.refresh_summary(identity.job_id)

    async def _describe(self, message: PoisonMessage) -> PoisonEntry:
        identity = identify(message.text)
        summary = await self._store.get_summary(identity.job_id) if identity.job_id else None
        preview = " ".join(message.text.split())
        return PoisonEntry(
            message_id=message.id,
            inserted_on=message.inserted_on,
            kind=identity.kind,
            job_id=identity.job_id,
            operations=len(identity.op_ids),
            job_status=summary.status.value if summary else None,
            reason=summary.reason if summary else None,
            preview=preview[:_PREVIEW_CHARS] + ("…" if len(preview) > _PREVIEW_CHARS else ""),
        )
