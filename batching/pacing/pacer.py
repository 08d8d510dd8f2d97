"""The Pacer: what an instance asks before each `$batch`, and tells after it.

`acquire(cost)` waits until the fleet's shared budget allows the batch (one conditional write
to the shared state, usually). `observe(feedback)` takes what Graph answered: a 429 holds every
lane it hit at once, here and, through the shared state, on every other instance; usage and
clean answers adjust the shared rate on the next reservation. With the shared state
unreachable, the instance paces itself on a conservative share of the budget until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

from batching.graph.throttling import RequestCost
from batching.pacing.schedule import Feedback, Lane, LaneLimit, LaneState, adapt, hold, reserve
from batching.pacing.store import PaceConflict, PaceRecord, PaceStore, PaceStoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_HOLD_SECONDS: Final = 2.0  # a 429 without Retry-After
SPACING_SLACK: Final = 1.03
_RECHECK_LEAD_SECONDS: Final = 0.3
_MAX_RACES: Final = 12
_T = TypeVar("_T")


class Pacer:
    def __init__(
        self,
        store: PaceStore,
        limits: Mapping[Lane, LaneLimit],
        *,
        fallback_share: float = 0.25,
        fallback_seconds: float = 30.0,
        recheck_after_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._limits = dict(limits)
        self._fallback_limits = {
            lane: LaneLimit(limit.rate * fallback_share, limit.burst) for lane, limit in limits.items()
        }
        self._fallback_seconds = fallback_seconds
        self._recheck_after = recheck_after_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._shared: PaceRecord | None = None  # last state read or written, with its ETag
        self._etag: str | None = None
        self._local: PaceRecord = {lane: LaneState() for lane in Lane}  # used while degraded
        self._sent: PaceRecord = {lane: LaneState() for lane in Lane}  # this instance's own sends
        self._degraded_until = 0.0
        self._pending: dict[Lane, Feedback] = {}
        self._holds: dict[Lane, float] = {}
        self._publishing: asyncio.Task[None] | None = None
        self.storage_calls = 0

    @property
    def degraded(self) -> bool:
        return self._clock() < self._degraded_until

    def budget(self) -> dict[Lane, tuple[float, float]]:
        """Per lane, as last seen here: the share of the bucket already reserved (1: sends wait
        for the budget, or Graph holds the lane) and the rate the fleet is paced at now. What
        telemetry reports as budget in use."""
        now = self._clock()
        degraded = self.degraded
        record = self._local if degraded or self._shared is None else self._shared
        limits = self._fallback_limits if degraded else self._limits
        budget: dict[Lane, tuple[float, float]] = {}
        for lane in Lane:
            state, limit = record[lane], limits[lane]
            rate = limit.rate * state.factor
            budget[lane] = (min(1.0, max(0.0, state.tat - now) * rate / limit.burst), rate)
        return budget

    def hold_until(self, lanes: Mapping[Lane, float] | None = None) -> float:
        """The latest hold known here on the given lanes (all lanes when None)."""
        wanted = [lane for lane, amount in (lanes or dict.fromkeys(Lane, 1.0)).items() if amount > 0]
        known = [self._holds.get(lane, 0.0) for lane in wanted]
        if self._shared is not None:
            known.extend(self._shared[lane].hold_until for lane in wanted)
        return max(known, default=0.0)

    async def acquire(self, cost: RequestCost) -> None:
        """Wait until a batch of this cost may be sent without leaving the fleet's budget."""
        amounts = {Lane.WRITES: float(cost.writes), Lane.UNITS: float(cost.units)}
        while True:
            reserved_at = self._clock()
            start = await self._reserve(amounts)
            if start - reserved_at > self._recheck_after and not self.degraded:
                # A hold set elsewhere while this one waited voids it: look again shortly
                # before the start, so the read never makes the batch itself late.
                await self._sleep(max(0.0, start - self._clock() - _RECHECK_LEAD_SECONDS))
                await self._refresh()
            if start > self._clock():
                await self._sleep(start - self._clock())
            if self.hold_until(amounts) <= self._clock():
                await self._keep_spacing(amounts)
                return

    async def _keep_spacing(self, amounts: Mapping[Lane, float]) -> None:
        """Graph counts a batch when it arrives, not when it was granted: a batch that left late
        (a busy event loop) must not be followed at once by the next one, or Graph sees both in
        one burst. So this instance also paces its own sends, by when they really leave, a
        little faster than the budget (`SPACING_SLACK`) so a late batch is caught up with."""
        now = self._clock()
        start = now
        planned: PaceRecord = {}
        for lane, amount in amounts.items():
            limit = self._limits[lane]
            factor = self._shared[lane].factor if self._shared is not None else 1.0
            planned[lane], lane_start = reserve(
                self._sent[lane], LaneLimit(limit.rate * factor * SPACING_SLACK, limit.burst), amount, now
            )
            start = max(start, lane_start)
        if start > now:
            await self._sleep(start - now)
        self._sent.update(planned)

    def observe(self, feedback: Mapping[Lane, Feedback]) -> None:
        """What Graph answered. A 429 holds its lane now; the rest rides on the next reservation."""
        now = self._clock()
        throttled = False
        for lane, seen in feedback.items():
            if seen.empty:
                continue
            self._pending[lane] = self._pending.get(lane, Feedback()).merge(seen)
            if seen.throttled:
                throttled = True
                wait = seen.retry_after if seen.retry_after is not None else DEFAULT_HOLD_SECONDS
                until = now + wait
                self._holds[lane] = max(self._holds.get(lane, 0.0), until)
                self._local[lane] = hold(self._local[lane], self._fallback_limits[lane], until)
                if self._shared is not None:
                    self._shared = {**self._shared, lane: hold(self._shared[lane], self._limits[lane], until)}
        if throttled and (self._publishing is None or self._publishing.done()):
            self._publishing = asyncio.create_task(self._publish())

    async def _publish(self) -> None:
        """Write the holds learned here to the shared state at once, for every other instance."""
        try:
            await self._reserve({})
        except Exception:  # never let a background write take the process down
            log.exception("could not publish a throttling hold")

    async def _reserve(self, amounts: Mapping[Lane, float]) -> float:
        async with self._lock:
            now = self._clock()
            if now < self._degraded_until:
                return self._reserve_local(amounts, now)
            for race in range(_MAX_RACES):
                try:
                    if self._shared is None:
                        loaded, self._etag = await self._call(self._store.load())
                    shared = self._shared if self._shared is not None else loaded
                    record, start = self._plan(shared, self._limits, amounts, now)
                    self._etag = await self._call(self._store.save(record, self._etag))
                    self._shared = record
                    self._pending.clear()
                    return start
                except PaceConflict:
                    self._shared = None
                    await self._sleep(random.uniform(0, 0.005 * (race + 1)))
                    now = self._clock()
                except PaceStoreUnavailable as error:
                    log.warning(
                        "shared pacing state unavailable (%s); pacing on a local share for %.0f s",
                        error,
                        self._fallback_seconds,
                    )
                    self._shared = None
                    self._degraded_until = now + self._fallback_seconds
                    return self._reserve_local(amounts, now)
            log.warning("shared pacing state busy; this batch paced on the local share")
            return self._reserve_local(amounts, now)

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                self._shared, self._etag = await self._call(self._store.load())
            except PaceStoreUnavailable:
                self._shared = None

    def _reserve_local(self, amounts: Mapping[Lane, float], now: float) -> float:
        record, start = self._plan(self._local, self._fallback_limits, amounts, now)
        self._local = record
        return start

    def _plan(
        self,
        record: PaceRecord,
        limits: Mapping[Lane, LaneLimit],
        amounts: Mapping[Lane, float],
        now: float,
    ) -> tuple[PaceRecord, float]:
        """Apply feedback and holds learned here, then reserve each lane; the latest start wins."""
        planned: PaceRecord = {}
        start = now
        for lane in Lane:
            state = adapt(record[lane], self._pending.get(lane, Feedback()), now)
            if self._holds.get(lane, 0.0) > state.hold_until:
                state = hold(state, limits[lane], self._holds[lane])
            state, lane_start = reserve(state, limits[lane], amounts.get(lane, 0.0), now)
            if state.factor < 1.0 and state.adjusted_at == now:
                log.info("pacing %s at %.0f%% of the budget", lane.value.lower(), state.factor * 100)
            planned[lane] = state
            if amounts.get(lane, 0.0) > 0:
                start = max(start, lane_start)
        return planned, start

    async def _call(self, pending: Awaitable[_T]) -> _T:
        self.storage_calls += 1
        return await pending
