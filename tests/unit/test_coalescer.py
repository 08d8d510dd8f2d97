"""Concurrent callers share batches (httpx.MockTransport behind the real client)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from azure.core.credentials import AccessToken

from batching.coalescer import NOT_CLAIMED, BatchCoalescer
from batching.graph.auth import GraphTokenAuth
from batching.graph.client import BatchRequestItem, GraphBatchClient, build_http_client
from batching.graph.throttling import Priority
from batching.pacing import Lane, LaneLimit, MemoryPaceStore, Pacer

GRAPH = httpx.URL("https://graph.microsoft.com/v1.0")


class _Token:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def _coalescer(sizes: list[int], *, status: int = 200, linger: float = 0.05) -> BatchCoalescer:
    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        sizes.append(len(items))
        if status != 200:
            return httpx.Response(status, headers={"Retry-After": "3"})
        return httpx.Response(200, json={"responses": [{"id": i["id"], "status": 204} for i in items]})

    http = build_http_client(
        GRAPH, GraphTokenAuth(_Token(), GRAPH), timeout_seconds=5, transport=httpx.MockTransport(handler)
    )
    return BatchCoalescer(GraphBatchClient(http), linger_seconds=linger, max_wait_seconds=2)


def _items(prefix: str, n: int) -> list[BatchRequestItem]:
    return [BatchRequestItem(f"{prefix}{i}", "GET", f"/users/{prefix}{i}") for i in range(n)]


async def test_small_submissions_from_many_callers_fill_shared_batches() -> None:
    sizes: list[int] = []
    coalescer = _coalescer(sizes)
    answers = await asyncio.gather(*(coalescer.send(_items(f"c{c}-", 5)) for c in range(8)))
    assert sorted(sizes) == [20, 20]
    assert all(len(a) == 5 and {r.status for r in a.values()} == {204} for a in answers)


async def test_partial_batch_waits_for_a_caller_still_preparing() -> None:
    sizes: list[int] = []
    coalescer = _coalescer(sizes)

    async def late_caller() -> None:
        async with coalescer.preparing():
            await asyncio.sleep(0.3)  # longer than the linger
            await coalescer.send(_items("late", 12), caller_preparing=True)

    await asyncio.gather(coalescer.send(_items("early", 8)), late_caller())
    assert sizes == [20]


async def test_a_claim_hook_decides_at_send_time_which_items_go_and_fails_only_its_own() -> None:
    sizes: list[int] = []
    coalescer = _coalescer(sizes)
    asked: list[list[str]] = []

    async def every_other(keys: object) -> set[str]:
        assert isinstance(keys, list)
        asked.append(keys)
        return set(keys[::2])

    async def broken(keys: object) -> set[str]:
        raise ConnectionError("storage is down")

    claimed, failed, free = await asyncio.gather(
        coalescer.send(_items("a", 6), claim=every_other),
        coalescer.send(_items("b", 4), claim=broken),
        coalescer.send(_items("c", 4)),
        return_exceptions=True,
    )
    assert isinstance(claimed, dict)
    assert isinstance(free, dict)
    assert [k for k, answer in claimed.items() if answer is NOT_CLAIMED] == ["a1", "a3", "a5"]
    assert {claimed[k].status for k in ("a0", "a2", "a4")} == {204}
    assert isinstance(failed, ConnectionError)
    assert {answer.status for answer in free.values()} == {204}
    assert asked == [[f"a{i}" for i in range(6)]]
    assert sizes == [7]  # three of a, four of c: nothing held back or failed was sent


async def test_whole_batch_failure_reaches_every_item() -> None:
    sizes: list[int] = []
    answers = await _coalescer(sizes, status=429).send(_items("x", 3))
    assert {a.status for a in answers.values()} == {429}
    assert {a.retry_after for a in answers.values()} == {"3"}


def _recording_coalescer(
    seen: list[tuple[str, list[str]]], *, pacer: Pacer | None = None, answer: Any = None
) -> BatchCoalescer:
    """A coalescer whose Graph records each call's priority header and item urls."""

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        seen.append((request.headers.get("x-ms-throttle-priority", ""), [i["url"] for i in items]))
        return httpx.Response(
            200, json={"responses": [answer(i) if answer else {"id": i["id"], "status": 204} for i in items]}
        )

    http = build_http_client(
        GRAPH, GraphTokenAuth(_Token(), GRAPH), timeout_seconds=5, transport=httpx.MockTransport(handler)
    )
    return BatchCoalescer(GraphBatchClient(http), pacer=pacer, linger_seconds=0.01, max_wait_seconds=1)


def _writes(prefix: str, n: int) -> list[BatchRequestItem]:
    return [
        BatchRequestItem(
            f"{prefix}{i}", "PATCH", f"/users/{prefix}{i}", {"Content-Type": "application/json"}, {}
        )
        for i in range(n)
    ]


async def test_work_someone_waits_for_goes_ahead_of_bulk_work_and_says_so_to_graph() -> None:
    seen: list[tuple[str, list[str]]] = []
    pacer = Pacer(MemoryPaceStore(), {Lane.WRITES: LaneLimit(200, 20), Lane.UNITS: LaneLimit(1000, 1000)})
    coalescer = _recording_coalescer(seen, pacer=pacer)

    async def flow_arrives_later() -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return await coalescer.send(_writes("flow", 20), priority=Priority.HIGH)

    bulk, flow = await asyncio.gather(
        coalescer.send(_writes("bulk", 100), priority=Priority.LOW), flow_arrives_later()
    )
    assert len(bulk) == 100
    assert len(flow) == 20
    flow_call = next(n for n, (_, urls) in enumerate(seen) if urls[0].startswith("/users/flow"))
    assert flow_call < len(seen) - 1  # it did not wait for the bulk work to drain
    assert seen[flow_call][0] == "High"
    assert all(url.startswith("/users/flow") for url in seen[flow_call][1])  # one batch, not mixed
    assert {header for header, urls in seen if urls[0].startswith("/users/bulk")} == {"Low"}


async def test_a_429_in_one_batch_holds_the_next_batch_until_retry_after() -> None:
    seen: list[tuple[str, list[str]]] = []
    held: list[float] = []
    pacer = Pacer(MemoryPaceStore(), {Lane.WRITES: LaneLimit(1000, 20), Lane.UNITS: LaneLimit(1000, 1000)})

    def answer(item: dict[str, Any]) -> dict[str, Any]:
        if len(seen) == 1 and item["id"] == "1":
            return {"id": "1", "status": 429, "headers": {"Retry-After": "0.3"}, "body": {}}
        return {"id": item["id"], "status": 204}

    coalescer = _recording_coalescer(seen, pacer=pacer, answer=answer)
    first = await coalescer.send(_writes("a", 20))
    assert first["a0"].status == 429
    held.append(pacer.hold_until())
    started = time.time()
    await coalescer.send(_writes("b", 1))
    assert time.time() >= held[0] >= started  # the second call waited for Graph's window
