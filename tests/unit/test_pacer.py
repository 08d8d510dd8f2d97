"""The Pacer over a shared store: one budget for many instances, holds that reach everyone,
and a local share when the shared state cannot be reached. Time is virtual: no test sleeps."""

from __future__ import annotations

import asyncio

import pytest

from batching.graph.throttling import RequestCost
from batching.pacing import Feedback, Lane, LaneLimit, MemoryPaceStore, Pacer, PaceStoreUnavailable
from batching.pacing.store import PaceRecord

LIMITS = {Lane.WRITES: LaneLimit(20, 20), Lane.UNITS: LaneLimit(1000, 1000)}


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.overshoot = 0.0  # the next sleep wakes this much late (a busy event loop)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds) + self.overshoot
        self.overshoot = 0.0
        await asyncio.sleep(0)


class BrokenStore(MemoryPaceStore):
    async def load(self) -> tuple[PaceRecord, str | None]:
        raise PaceStoreUnavailable("ServiceRequestError")


def _pacer(store: MemoryPaceStore, time: VirtualTime) -> Pacer:
    return Pacer(store, LIMITS, clock=time.clock, sleep=time.sleep, fallback_share=0.25)


async def test_two_instances_sharing_one_store_never_exceed_the_budget_in_any_window() -> None:
    store, time = MemoryPaceStore(), VirtualTime()
    first, second = _pacer(store, time), _pacer(store, time)
    sent: list[tuple[float, int]] = []
    for n in range(60):
        pacer = first if n % 3 else second
        writes = 20 if n % 4 else 7
        await pacer.acquire(RequestCost(writes=writes, units=writes))
        sent.append((time.now, writes))
    for begin, _ in sent:
        for width in (1.0, 5.0, 15.0):
            inside = sum(w for at, w in sent if begin <= at < begin + width)
            assert inside <= 20 + 20 * width + 1e-6
    total = sum(w for _, w in sent)
    assert time.now - sent[0][0] >= (total - 20) / 20 - 1e-6


async def test_a_hold_learned_by_one_instance_is_honoured_by_the_other() -> None:
    store, time = MemoryPaceStore(), VirtualTime()
    first, second = _pacer(store, time), _pacer(store, time)
    await first.acquire(RequestCost(writes=1, units=1))
    throttled_at = time.now
    first.observe({Lane.WRITES: Feedback(throttled=1, retry_after=30, answers=1)})
    await asyncio.sleep(0.01)  # the hold is published in the background
    await second.acquire(RequestCost(writes=1, units=1))
    assert time.now >= throttled_at + 30


async def test_reads_are_not_held_by_a_write_hold() -> None:
    store, time = MemoryPaceStore(), VirtualTime()
    pacer = _pacer(store, time)
    pacer.observe({Lane.WRITES: Feedback(throttled=1, retry_after=60, answers=1)})
    start = time.now
    await pacer.acquire(RequestCost(writes=0, units=2))
    assert time.now - start < 1


async def test_one_instance_costs_one_storage_call_per_batch() -> None:
    store, time = MemoryPaceStore(), VirtualTime()
    pacer = _pacer(store, time)
    for _ in range(50):
        await pacer.acquire(RequestCost(writes=20, units=20))
    assert pacer.storage_calls <= 51  # one read at start, then one conditional write per batch


async def test_unreachable_storage_falls_back_to_a_conservative_local_share() -> None:
    time = VirtualTime()
    pacer = _pacer(BrokenStore(), time)
    start = time.now
    for _ in range(5):
        await pacer.acquire(RequestCost(writes=20, units=20))
    assert pacer.degraded
    # a quarter of 20/s: after the first full burst, each batch of 20 waits 4 s
    assert time.now - start == pytest.approx(16.0)


async def test_throttling_slows_the_shared_rate_for_every_instance() -> None:
    store, time = MemoryPaceStore(), VirtualTime()
    first, second = _pacer(store, time), _pacer(store, time)
    await first.acquire(RequestCost(writes=20, units=20))
    first.observe({Lane.WRITES: Feedback(throttled=12, retry_after=0, answers=20)})
    await asyncio.sleep(0.01)
    await second.acquire(RequestCost(writes=20, units=20))
    record, _ = await store.load()
    assert record[Lane.WRITES].factor == pytest.approx(1 - 0.1 * 12 / 20)


async def test_a_batch_that_left_late_is_not_followed_at_once_by_the_next() -> None:
    time = VirtualTime()
    pacer = _pacer(MemoryPaceStore(), time)
    await pacer.acquire(RequestCost(writes=20, units=20))
    time.overshoot = 0.8  # the event loop was busy: the second batch leaves 0.8 s late
    await pacer.acquire(RequestCost(writes=20, units=20))
    left_late = time.now
    await pacer.acquire(RequestCost(writes=20, units=20))
    assert time.now >= left_late + 1.0 / 1.03 - 1e-9  # an interval after the late one, as Graph sees it
