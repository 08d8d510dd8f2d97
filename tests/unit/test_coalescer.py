"""Concurrent callers share batches (httpx.MockTransport behind the real client)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from azure.core.credentials import AccessToken

from batching.coalescer import BatchCoalescer
from batching.graph.auth import GraphTokenAuth
from batching.graph.client import BatchRequestItem, GraphBatchClient, build_http_client

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


async def test_whole_batch_failure_reaches_every_item() -> None:
    sizes: list[int] = []
    answers = await _coalescer(sizes, status=429).send(_items("x", 3))
    assert {a.status for a in answers.values()} == {429}
    assert {a.retry_after for a in answers.values()} == {"3"}
