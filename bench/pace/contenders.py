"""The contenders: the app on 1 or N dev hosts, and two clients as people write them today.

Each has one `run(ops) -> RunResult`. The baselines call the emulator directly with httpx and
the emulator's stand-in token; they share one loop (send, wait what Graph asked, resend what
was throttled) and differ only in what one send is.
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.pace.jobs import Job, run_jobs
from bench.pace.ops import Operation, chunks, run_id
from bench.pace.result import RunResult
from bench.pace.stack import EMULATOR_AUTH, peak_rss_mib, running_hosts

WORKERS = 4  # concurrent requests of a baseline, as many as the app's default batches in flight
BATCH_SIZE = 20  # Graph's $batch maximum
DEFAULT_RETRY_SECONDS = 1.0  # a 429 without Retry-After: wait this long (generous to the baselines)
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class Contender(Protocol):
    name: str

    def run(self, ops: list[Operation]) -> RunResult: ...


# --- the product ------------------------------------------------------------------------------


@dataclass
class Product:
    """The app's dev hosts fed by HTTP jobs of `job_size` operations, submitted round-robin.
    Hosts start before the clock does, with fresh settings per run, and stop after it."""

    name: str
    hosts: int
    env: Callable[[], dict[str, str]]
    job_size: int
    timeout: float
    log_dir: Path

    def run(self, ops: list[Operation]) -> RunResult:
        run = run_id()
        jobs = [Job(f"pace-{run}-{i}", part) for i, part in enumerate(chunks(ops, self.job_size))]
        label = f"{re.sub(r'[^a-z0-9]+', '-', self.name.lower())}-{run}"
        with running_hosts(self.env(), self.hosts, self.log_dir, label) as hosts:
            result = asyncio.run(run_jobs(hosts, jobs, self.timeout))
            peak = max(peak_rss_mib(h.process.pid) for h in hosts)
        return replace(result, peak_rss_mib=peak)


# --- the baselines ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    completed: int = 0
    failed: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.completed + other.completed, self.failed + other.failed)

    @staticmethod
    def of(status: int) -> Tally:
        return Tally(1, 0) if 200 <= status < 300 else Tally(0, 1)


@dataclass(frozen=True)
class Attempt:
    """One send: what it settled, what Graph throttled, and how long Graph asked to wait."""

    settled: Tally
    throttled: list[Operation]
    wait: float = 0.0


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float:
    """Graph's Retry-After: seconds, decimal seconds, the first of a list, or an HTTP-date."""
    value = next((str(v) for k, v in (headers or {}).items() if k.lower() == "retry-after"), "")
    if not value:
        return DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(value.split(",")[0]))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_SECONDS


async def pause(seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - time.monotonic())))


class Baseline(ABC):
    """`WORKERS` workers take units of work off one list and settle each: send, and while Graph
    throttles part of it, wait what Graph asked and resend that part. Bounded by the deadline."""

    name: str

    def __init__(self, graph: str, timeout: float, workers: int = WORKERS) -> None:
        self.graph = graph
        self.timeout = timeout
        self.workers = workers

    @abstractmethod
    def units(self, ops: list[Operation]) -> list[list[Operation]]:
        """How the operations are cut into units of work."""

    @abstractmethod
    async def attempt(self, client: httpx.AsyncClient, ops: list[Operation]) -> Attempt:
        """Send `ops` once."""

    def run(self, ops: list[Operation]) -> RunResult:
        return asyncio.run(self._run(ops))

    async def _run(self, ops: list[Operation]) -> RunResult:
        started_at, start = time.time(), time.monotonic()
        deadline = start + self.timeout
        todo = self.units(ops)
        todo.reverse()  # popped from the end: first unit first
        async with httpx.AsyncClient(
            base_url=self.graph,
            headers=EMULATOR_AUTH,
            timeout=60.0,
            limits=httpx.Limits(max_connections=self.workers),
        ) as client:
            done = await asyncio.gather(*(self._worker(client, todo, deadline) for _ in range(self.workers)))
        tally = sum((t for t, _ in done), Tally())
        timed_out = tally.completed + tally.failed < len(ops)
        end = time.monotonic() if timed_out else max(finished for _, finished in done)
        return RunResult(len(ops), tally.completed, tally.failed, end - start, timed_out, started_at)

    async def _worker(
        self, client: httpx.AsyncClient, todo: list[list[Operation]], deadline: float
    ) -> tuple[Tally, float]:
        tally, finished = Tally(), time.monotonic()
        while todo and time.monotonic() < deadline:
            tally += await self._settle(client, todo.pop(), deadline)
            finished = time.monotonic()
        return tally, finished

    async def _settle(self, client: httpx.AsyncClient, unit: list[Operation], deadline: float) -> Tally:
        tally, pending = Tally(), unit
        while pending and time.monotonic() < deadline:
            try:
                attempt = await self.attempt(client, pending)
            except httpx.TransportError:
                attempt = Attempt(Tally(), pending, DEFAULT_RETRY_SECONDS)
            tally, pending = tally + attempt.settled, attempt.throttled
            if pending:
                await pause(attempt.wait, deadline)
        return tally


class Naive(Baseline):
    """One direct request per operation (`POST /users`, ...); on 429, wait Retry-After, resend."""

    name = "naive: 1 request per op"

    def units(self, ops: list[Operation]) -> list[list[Operation]]:
        return [[op] for op in ops]

    async def attempt(self, client: httpx.AsyncClient, ops: list[Operation]) -> Attempt:
        (op,) = ops
        response = await client.request(op["method"], op["url"], json=op.get("body"))
        if response.status_code == 429:
            return Attempt(Tally(), ops, retry_after_seconds(response.headers))
        return Attempt(Tally.of(response.status_code), [])


class SdkBatch(Baseline):
    """Chunks of 20 in `$batch`; resend only the throttled items after the longest item
    Retry-After, as Microsoft's batching guidance advises. A whole-call 429/503/504 resends all."""

    name = "SDK-style: $batch of 20"

    def units(self, ops: list[Operation]) -> list[list[Operation]]:
        return chunks(ops, BATCH_SIZE)

    async def attempt(self, client: httpx.AsyncClient, ops: list[Operation]) -> Attempt:
        response = await client.post("/$batch", json={"requests": [batch_item(op) for op in ops]})
        if response.status_code in (429, 503, 504):
            return Attempt(Tally(), ops, retry_after_seconds(response.headers))
        if response.status_code != 200:
            return Attempt(Tally(0, len(ops)), [])
        answers = {str(a.get("id")): a for a in response.json().get("responses", [])}
        status = {op["id"]: int(answers.get(op["id"], {}).get("status", 0)) for op in ops}
        throttled = [op for op in ops if status[op["id"]] == 429]
        settled = sum((Tally.of(s) for s in status.values() if s != 429), Tally())
        wait = max((retry_after_seconds(answers[op["id"]].get("headers")) for op in throttled), default=0.0)
        return Attempt(settled, throttled, wait)


def batch_item(op: Operation) -> dict[str, Any]:
    """A `$batch` request item: Graph wants a body and Content-Type on every write."""
    item: dict[str, Any] = {"id": op["id"], "method": op["method"], "url": op["url"]}
    if op["method"] in WRITE_METHODS:
        item["body"] = op.get("body") or {}
        item["headers"] = {"Content-Type": "application/json"}
    return item
