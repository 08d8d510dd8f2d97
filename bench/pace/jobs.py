"""Driving the app through its HTTP door the way Power Automate does: POST the job, then
follow it with GETs, waiting the Retry-After of each 202, until the 200."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.pace.ops import Operation
from bench.pace.result import RunResult
from devhost.stack import DevHost

REQUEST_TIMEOUT = 60.0  # recording 1,000 rows on Azurite under load can take a while
MIN_POLL, MAX_POLL = 0.25, 5.0


@dataclass(frozen=True)
class Job:
    job_id: str
    operations: list[Operation]


@dataclass(frozen=True)
class JobOutcome:
    succeeded: int = 0
    failed: int = 0  # Failed, Skipped and Rejected
    done: bool = False
    finished: float | None = None  # monotonic time of the 200


def outcome(body: dict[str, Any], *, done: bool) -> JobOutcome:
    counts = body.get("counts", {})
    failed = sum(int(counts.get(key, 0)) for key in ("failed", "skipped", "rejected"))
    return JobOutcome(int(counts.get("succeeded", 0)), failed, done, time.monotonic() if done else None)


def poll_delay(response: httpx.Response) -> float:
    try:
        asked = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        asked = 1.0
    return min(MAX_POLL, max(MIN_POLL, asked))


async def submit(client: httpx.AsyncClient, host: DevHost, job: Job) -> None:
    document = {"jobId": job.job_id, "operations": job.operations}
    response = await client.post(f"{host.base_url}/api/jobs", json=document, headers=host.headers)
    if response.status_code != 202:
        raise RuntimeError(f"job {job.job_id}: POST answered {response.status_code}: {response.text[:500]}")


async def wait(client: httpx.AsyncClient, host: DevHost, job_id: str, deadline: float) -> JobOutcome:
    """Poll until the 200 or the deadline; a host too busy to answer is asked again."""
    last = JobOutcome()
    while time.monotonic() < deadline:
        delay = 1.0
        try:
            response = await client.get(f"{host.base_url}/api/jobs/{job_id}", headers=host.headers)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            return outcome(response.json(), done=True)
        if response is not None and response.status_code == 202:
            last, delay = outcome(response.json(), done=False), poll_delay(response)
        await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    return last


async def submit_and_wait(client: httpx.AsyncClient, host: DevHost, job: Job, deadline: float) -> JobOutcome:
    await submit(client, host, job)
    return await wait(client, host, job.job_id, deadline)


async def run_jobs(hosts: Sequence[DevHost], jobs: Sequence[Job], allowed: float) -> RunResult:
    """Submit every job at once (round-robin over `hosts`), each followed by its own poller;
    after `allowed` seconds the run is reported as timed out."""
    started_at, start = time.time(), time.monotonic()
    deadline = start + allowed
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        outcomes = await asyncio.gather(
            *(submit_and_wait(client, hosts[i % len(hosts)], job, deadline) for i, job in enumerate(jobs))
        )
    done = all(o.done for o in outcomes)
    end = max(o.finished or 0.0 for o in outcomes) if done else time.monotonic()
    return RunResult(
        operations=sum(len(job.operations) for job in jobs),
        completed=sum(o.succeeded for o in outcomes),
        failed=sum(o.failed for o in outcomes),
        seconds=end - start,
        timed_out=not done,
        started_at=started_at,
    )
