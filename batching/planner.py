"""Dependency waves and batch packing, following Graph's `$batch` rules.

Graph accepts a batch that is fully parallel or one sequential chain, and cannot pass values
between items. So the planner runs dependency levels itself: each wave holds every operation
whose dependencies have all succeeded, across all jobs in hand, packed into fully parallel
batches of at most 20. An operation whose dependency did not succeed is skipped, never sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from batching.models import WorkItem
from batching.records import OperationStatus

MAX_BATCH_SIZE: Final = 20

Key = tuple[str, str]  # (job id, operation id)


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """An operation of a job, as the planner tracks it."""

    job_id: str
    item: WorkItem

    @property
    def key(self) -> Key:
        return (self.job_id, self.item.operation.id)


@dataclass(frozen=True, slots=True)
class SkippedItem:
    planned: PlannedItem
    failed_dependency: str
    reason: str


@dataclass(slots=True)
class Wave:
    """What to do next: batches to send now, and items that can never run."""

    batches: list[list[PlannedItem]] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    waiting_outside: list[PlannedItem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.batches or self.skipped or self.waiting_outside)


class WavePlanner:
    """Tracks the operations in hand and hands out waves until none is left."""

    def __init__(
        self,
        items: Iterable[PlannedItem],
        known_statuses: Mapping[Key, OperationStatus],
        *,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch size must be 1..{MAX_BATCH_SIZE}")
        self._batch_size = batch_size
        self._open: dict[Key, PlannedItem] = {item.key: item for item in items}
        # Final (or pending) statuses of operations outside this run, e.g. from earlier runs.
        self._status: dict[Key, OperationStatus] = dict(known_statuses)
        self._root_failure: dict[Key, str] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def next_wave(self) -> Wave:
        wave = Wave()
        ready: list[PlannedItem] = []
        for key, planned in list(self._open.items()):
            verdict = self._dependency_verdict(planned)
            if verdict is None:
                ready.append(planned)
            elif isinstance(verdict, SkippedItem):
                wave.skipped.append(verdict)
                del self._open[key]
                self._settle(key, OperationStatus.SKIPPED, root=verdict.failed_dependency)
            elif verdict == "outside":
                wave.waiting_outside.append(planned)
        for planned in wave.waiting_outside:
            del self._open[planned.key]
        for planned in ready:
            del self._open[planned.key]
        wave.batches = [
            ready[start : start + self._batch_size] for start in range(0, len(ready), self._batch_size)
        ]
        return wave

    def settle(self, key: Key, status: OperationStatus) -> None:
        """Record a sent operation's final status so its dependents can move on."""
        self._settle(key, status, root=key[1])

    def reopen(self, planned: PlannedItem) -> None:
        """Put a sent operation back for a later wave of this run (Graph asked for a short wait)."""
        self._open[planned.key] = planned

    def withdraw(self, key: Key) -> list[PlannedItem]:
        """Take back everything still open that waits on `key`, transitively (it goes to retry)."""
        withdrawn: list[PlannedItem] = []
        frontier = [key]
        while frontier:
            job_id, op_id = frontier.pop()
            for other_key, planned in list(self._open.items()):
                if other_key[0] == job_id and op_id in planned.item.operation.depends_on:
                    withdrawn.append(self._open.pop(other_key))
                    frontier.append(other_key)
        return withdrawn

    def _settle(self, key: Key, status: OperationStatus, *, root: str) -> None:
        self._status[key] = status
        if status is not OperationStatus.SUCCEEDED:
            self._root_failure[key] = root

    def _dependency_verdict(self, planned: PlannedItem) -> SkippedItem | str | None:
        """None when ready; a SkippedItem when a dependency did not succeed; else why it waits."""
        waiting = None
        for dep in planned.item.operation.depends_on:
            dep_key = (planned.job_id, dep)
            status = self._status.get(dep_key)
            if status is OperationStatus.SUCCEEDED:
                continue
            if status is not None and status.is_final:
                root = self._root_failure.get(dep_key, dep)
                reason = (
                    f"dependency {dep!r} {status.value.lower()}"
                    if root == dep
                    else f"dependency {dep!r} skipped because {root!r} did not succeed"
                )
                return SkippedItem(planned, root, reason)
            waiting = "inside" if dep_key in self._open else "outside"
            if waiting == "inside":
                return waiting
        return waiting
