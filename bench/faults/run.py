"""One fault run: submit the jobs through both doors, disturb (kill hosts, stop storage) while
the work runs, wait until every operation has a final row (or the work stalls), and collect
what the results table, the emulator's call log and its tenant hold."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from bench.faults.stack import EmulatorAdmin, Hosts, RestartableAzurite
from bench.faults.workload import Job

FINAL = frozenset({"Succeeded", "Failed", "Skipped", "Rejected"})
POLL_SECONDS = 2.0
SETTLE_SECONDS = 3.0  # after the last final row: a straggling send would still be logged
SUBMIT_SECONDS = 180.0


def progress(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- submitting -----------------------------------------------------------------------------------


def submit_http(hosts: Hosts, job: Job) -> None:
    """POST the job until a host takes it; the same jobId and body again is the same job."""
    deadline = time.monotonic() + SUBMIT_SECONDS
    body = json.dumps(job.document())
    while True:
        host = hosts.first
        try:
            response = httpx.post(
                f"{host.base_url}/api/jobs",
                content=body,
                headers={**host.headers, "Content-Type": "application/json"},
                timeout=60,
            )
            if response.status_code in (200, 202):
                return
            problem = f"{response.status_code} {response.text[:300]}"
            if response.status_code < 500:
                raise RuntimeError(f"job {job.job_id} refused: {problem}")
        except httpx.TransportError as error:
            problem = repr(error)
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.job_id} not accepted in {SUBMIT_SECONDS:g} s: {problem}")
        time.sleep(1.0)


def submit_queue(connection_string: str, queue_name: str, job: Job) -> None:
    """The job as a producer puts it on the queue: plain JSON."""
    deadline = time.monotonic() + SUBMIT_SECONDS
    with QueueClient.from_connection_string(connection_string, queue_name) as queue:
        while True:
            try:
                with contextlib.suppress(ResourceExistsError):
                    queue.create_queue()
                queue.send_message(json.dumps(job.document()))
                return
            except Exception as error:  # storage may be restarting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job.job_id} not queued: {error!r}") from error
                time.sleep(1.0)


def submit_all(hosts: Hosts, jobs: Sequence[Job]) -> None:
    env = hosts.env

    def one(job: Job) -> None:
        if job.door == "http":
            submit_http(hosts, job)
        else:
            submit_queue(env["AzureWebJobsStorage"], env["PROVISIONING_QUEUE"], job)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, jobs))


# --- disturbing -----------------------------------------------------------------------------------


class Disturbance(Protocol):
    def run(self, stop: threading.Event) -> None: ...

    def describe(self) -> str: ...


@dataclass
class Calm:
    """Nothing besides what the emulator's faults do."""

    def run(self, stop: threading.Event) -> None:
        return None

    def describe(self) -> str:
        return "none"


@dataclass
class HostKills:
    """`count` SIGKILLs of the host, each after a seeded random `uptime` of its current life,
    and a restart right after each."""

    hosts: Hosts
    count: int
    uptime: tuple[float, float]
    seed: int
    done: int = 0

    def run(self, stop: threading.Event) -> None:
        chooser = random.Random(self.seed)
        for _ in range(self.count):
            if stop.wait(chooser.uniform(*self.uptime)):
                return
            with self.hosts.lock:
                self.hosts.kill(0)
                self.hosts.restart(0)
            self.done += 1

    def describe(self) -> str:
        low, high = self.uptime
        return (
            f"{self.done} of {self.count} SIGKILLs (after {low:g}-{high:g} s of uptime), "
            "each followed by a restart"
        )


@dataclass
class StorageOutages:
    """`count` times: Azurite runs `up` seconds, is stopped, stays down `down` seconds and is
    started again on the same folder and ports (seeded random durations)."""

    azurite: RestartableAzurite
    count: int
    up: tuple[float, float]
    down: tuple[float, float]
    seed: int
    outages: list[tuple[float, float]] = field(default_factory=list)  # (stopped, started), epoch

    def run(self, stop: threading.Event) -> None:
        chooser = random.Random(self.seed)
        for _ in range(self.count):
            if stop.wait(chooser.uniform(*self.up)):
                return
            stopped = time.time()
            self.azurite.stop()
            stop.wait(chooser.uniform(*self.down))  # even when asked to stop: start it again
            self.azurite.start()
            self.outages.append((stopped, time.time()))

    def describe(self) -> str:
        spans = ", ".join(f"{end - start:.0f} s" for start, end in self.outages)
        forced = f"; {self.azurite.forced_stops} needed SIGKILL" if self.azurite.forced_stops else ""
        return f"{len(self.outages)} of {self.count} Azurite stops and restarts (down {spans or '-'}){forced}"


# --- waiting and collecting ---------------------------------------------------------------------


@dataclass
class Collected:
    """Everything the figures are computed from."""

    jobs: list[Job]
    rows: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    creates: dict[str, Any]
    faults: dict[str, Any]
    started_at: float  # epoch seconds of the first submission
    finished_at: float  # epoch seconds when the last operation had a final row (or the wait ended)
    timed_out: bool
    disturbance: str
    crashes: list[str]


def table_rows(connection_string: str, table: str, select: list[str] | None = None) -> list[dict[str, Any]]:
    with TableClient.from_connection_string(connection_string, table) as client:
        return [dict(entity) for entity in client.list_entities(select=select)]


def final_count(connection_string: str, table: str, expected: set[tuple[str, str]]) -> int | None:
    """Operations with a final row; None while storage cannot be read."""
    try:
        rows = table_rows(connection_string, table, ["PartitionKey", "RowKey", "Status"])
    except AzureError:
        return None
    return sum(1 for r in rows if (r["PartitionKey"], r["RowKey"]) in expected and r.get("Status") in FINAL)


@dataclass(frozen=True)
class Patience:
    stall_seconds: float  # no new final row for this long: the rest is lost
    max_seconds: float


def wait_for_work(
    hosts: Hosts,
    jobs: Sequence[Job],
    disturbance: Disturbance,
    patience: Patience,
    on_tick: Callable[[int, int], None] | None = None,
) -> tuple[float, bool]:
    """Run `disturbance` beside the work until every operation has a final row; returns when
    that was seen (epoch) and whether the wait gave up."""
    env = hosts.env
    expected = {(job.job_id, str(op["id"])) for job in jobs for op in job.operations}
    stop = threading.Event()
    thread = threading.Thread(target=disturbance.run, args=(stop,), daemon=True)
    thread.start()
    start = time.monotonic()
    last_change, last_count, timed_out = start, -1, False
    try:
        while True:
            with hosts.lock:
                hosts.revive_crashed()
            count = final_count(env["AzureWebJobsStorage"], env["RESULTS_TABLE"], expected)
            now = time.monotonic()
            if count is not None and count != last_count:
                last_change, last_count = now, count
                if on_tick:
                    on_tick(count, len(expected))
            if count == len(expected):
                break
            if now - last_change > patience.stall_seconds or now - start > patience.max_seconds:
                timed_out = True
                break
            time.sleep(POLL_SECONDS)
        return time.time(), timed_out
    finally:
        stop.set()
        thread.join()


def collect(
    hosts: Hosts,
    admin: EmulatorAdmin,
    jobs: list[Job],
    started_at: float,
    finished_at: float,
    timed_out: bool,
    disturbance: Disturbance,
    settle_seconds: float = SETTLE_SECONDS,
) -> Collected:
    time.sleep(settle_seconds)
    env = hosts.env
    rows: list[dict[str, Any]] = []
    for _ in range(30):  # storage was just restarted, maybe
        try:
            rows = table_rows(env["AzureWebJobsStorage"], env["RESULTS_TABLE"])
            break
        except AzureError:
            time.sleep(1.0)
    return Collected(
        jobs=jobs,
        rows=rows,
        calls=admin.calls(),
        creates=admin.creates(),
        faults=admin.faults(),
        started_at=started_at,
        finished_at=finished_at,
        timed_out=timed_out,
        disturbance=disturbance.describe(),
        crashes=list(hosts.crashes),
    )
