"""Where the fleet keeps its pacing state: one Table entity, changed only with its ETag.

Every instance reads the entity, applies its reservation (and what it learned from Graph) and
writes it back on the condition that nobody wrote in between; a lost race re-reads and tries
again. Storage errors are translated here, once, into the two cases the pacer handles.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from batching.pacing.schedule import Lane, LaneState
from batching.storage import create_table_if_missing

PARTITION: Final = "pacing"
ROW: Final = "graph"

PaceRecord = dict[Lane, LaneState]


class PaceConflict(Exception):
    """Another instance changed the state since it was read."""


class PaceStoreUnavailable(Exception):
    """The state could not be read or written (storage unreachable, throttled, misconfigured)."""


class PaceStore(Protocol):
    async def load(self) -> tuple[PaceRecord, str | None]: ...

    async def save(self, record: PaceRecord, etag: str | None) -> str:
        """Write `record` if the stored state still has `etag` (None: if there is none yet)."""
        ...


def _to_entity(record: PaceRecord) -> dict[str, object]:
    entity: dict[str, object] = {"PartitionKey": PARTITION, "RowKey": ROW}
    for lane, state in record.items():
        entity[f"{lane}Tat"] = state.tat
        entity[f"{lane}HoldUntil"] = state.hold_until
        entity[f"{lane}Factor"] = state.factor
        entity[f"{lane}AdjustedAt"] = state.adjusted_at
    return entity


def _from_entity(entity: dict[str, object]) -> PaceRecord:
    def number(name: str, default: float) -> float:
        value = entity.get(name)
        return float(value) if isinstance(value, int | float) else default

    return {
        lane: LaneState(
            tat=number(f"{lane}Tat", 0.0),
            hold_until=number(f"{lane}HoldUntil", 0.0),
            factor=min(1.0, max(0.0, number(f"{lane}Factor", 1.0))) or 1.0,
            adjusted_at=number(f"{lane}AdjustedAt", 0.0),
        )
        for lane in Lane
    }


class TablePaceStore:
    """The shared state in the app's own storage account (table `PACING_TABLE`)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._ensured = False

    async def load(self) -> tuple[PaceRecord, str | None]:
        try:
            entity = await self._table.get_entity(PARTITION, ROW)
        except ResourceNotFoundError:
            await self._ensure_table()
            return _from_entity({}), None
        except AzureError as error:
            raise PaceStoreUnavailable(type(error).__name__) from error
        return _from_entity(dict(entity)), entity.metadata.get("etag")

    async def save(self, record: PaceRecord, etag: str | None) -> str:
        try:
            if etag is None:
                meta = await self._table.create_entity(_to_entity(record))
            else:
                meta = await self._table.update_entity(
                    _to_entity(record),
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceModifiedError, ResourceExistsError) as error:
            raise PaceConflict from error
        except ResourceNotFoundError as error:  # deleted meanwhile: start again
            raise PaceConflict from error
        except AzureError as error:
            raise PaceStoreUnavailable(type(error).__name__) from error
        return str(meta.get("etag", ""))

    async def _ensure_table(self) -> None:
        if self._ensured:
            return
        try:
            await create_table_if_missing(self._table)
        except AzureError as error:
            raise PaceStoreUnavailable(type(error).__name__) from error
        self._ensured = True

    async def close(self) -> None:
        await self._table.close()


class MemoryPaceStore:
    """The same contract in memory: one instance alone, and the unit tests' stand-in."""

    def __init__(self) -> None:
        self._record: PaceRecord = _from_entity({})
        self._version = 0
        self._lock = asyncio.Lock()
        self.saves = 0

    async def load(self) -> tuple[PaceRecord, str | None]:
        async with self._lock:
            return dict(self._record), str(self._version) if self._version else None

    async def save(self, record: PaceRecord, etag: str | None) -> str:
        async with self._lock:
            current = str(self._version) if self._version else None
            if etag != current:
                raise PaceConflict
            self._record = dict(record)
            self._version += 1
            self.saves += 1
            return str(self._version)
