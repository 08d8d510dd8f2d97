"""The six scenarios. Each resets the emulator, sets its limits, runs, and returns table rows
and target checks. Sizes come in two sets: the real one and a quick one for smoke runs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from batching.settings import load_local_settings
from bench.pace.calllog import call_stats, last_success_at, succeeded_urls
from bench.pace.contenders import Contender, Naive, Product, SdkBatch
from bench.pace.jobs import Job, run_jobs
from bench.pace.ops import run_id, title_csv, user_creates, user_patches
from bench.pace.result import Check, Row, RunResult
from bench.pace.stack import (
    ROOT,
    Emulator,
    EmulatorControl,
    Limits,
    app_env,
    run_emulator,
    running_hosts,
)
from devhost.stack import Azurite, run_azurite

LIMIT_100 = Limits(writes_per_second=100, write_burst=20)
LIMIT_20 = Limits(writes_per_second=20, write_burst=20)  # Graph's real shape for a tenant
APP_WRITES_100 = 98  # the app's write budget, a 2 % margin under the emulated 100/s
URGENT_OPS = 20
URGENT_TARGET_SECONDS = 10.0  # well under the ~40 s a job queued behind the drain would wait
IMPORT_TARGET_SECONDS = 0.150
MEMORY_TARGET_MB = 200.0
QUEUE_TIMEOUT_SECONDS = 300.0

Outcome = tuple[list[Row], list[Check]]


@dataclass(frozen=True)
class Sizes:
    creates_fast: int  # scenario 1, at 100 writes/s
    creates_slow: int  # scenario 2, at 20 writes/s
    jobs: int  # HTTP jobs the creates are split into
    bulk_rows: int  # scenario 3
    urgent_delay: float
    messages: int  # scenario 4
    import_repeats: int  # scenario 5
    memory_jobs: int  # scenario 6
    memory_job_size: int


FULL = Sizes(5000, 2000, 10, 5000, 10.0, 1000, 7, 10, 1000)
QUICK = Sizes(500, 200, 10, 1500, 5.0, 200, 3, 3, 500)


def progress(message: str) -> None:
    """Progress on stderr, so stdout carries only the table."""
    print(f"[pace {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timeout_for(bound: float) -> float:
    """How long a run may take before it is reported as timed out rather than awaited."""
    return 4 * bound + 60


@dataclass(frozen=True)
class Stack:
    azurite: Azurite
    emulator: Emulator
    control: EmulatorControl


class Bench:
    """What scenarios share: sizes, where logs go, and the stack, started on first use (the
    cold-start scenario needs none) and stopped with `exits`."""

    def __init__(self, exits: ExitStack, sizes: Sizes, log_dir: Path, *, legacy_throttle: bool) -> None:
        self._exits = exits
        self.sizes = sizes
        self.log_dir = log_dir
        self.legacy_throttle = legacy_throttle

    @cached_property
    def stack(self) -> Stack:
        azurite = self._exits.enter_context(run_azurite())
        emulator = self._exits.enter_context(run_emulator(self.log_dir / "emulator.log"))
        control = EmulatorControl(emulator)
        self._exits.callback(control.close)
        return Stack(azurite, emulator, control)

    def env(self, writes_per_second: int | None) -> dict[str, str]:
        return app_env(self.stack.azurite, self.stack.emulator, writes_per_second)

    def reset(self, limits: Limits | None, seed_users: int = 0) -> None:
        control = self.stack.control
        control.reset()
        if limits is not None:
            control.configure(limits.config(legacy=self.legacy_throttle))
        if seed_users:
            control.seed(seed_users)

    def row(
        self,
        scenario: str,
        name: str,
        result: RunResult,
        bound: float | None = None,
        rate: float | None = None,
    ) -> Row:
        """A table row with what Graph saw since the last reset, timed from `result`'s start."""
        calls = call_stats(self.stack.control.calls(), result.started_at)
        return Row(scenario, name, result, calls, bound, rate)


# --- 1, 2: throughput under a write limit ---------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    key: str
    creates: int
    jobs: int
    limits: Limits
    app_writes: int | None

    @property
    def bound(self) -> float:
        return self.creates / self.limits.writes_per_second

    @property
    def title(self) -> str:
        return f"{self.key}. {self.creates:,} creates at {self.limits.writes_per_second:g} writes/s"


def contenders(bench: Bench, spec: Throughput) -> list[Contender]:
    timeout, job_size = timeout_for(spec.bound), math.ceil(spec.creates / spec.jobs)

    def env() -> dict[str, str]:
        return bench.env(spec.app_writes)

    def product(hosts: int) -> Product:
        name = f"product, {hosts} host{'s' if hosts > 1 else ''}"
        return Product(name, hosts, env, job_size, timeout, bench.log_dir)

    graph = bench.stack.emulator.graph
    return [product(1), product(3), Naive(graph, timeout), SdkBatch(graph, timeout)]


def throughput(bench: Bench, spec: Throughput) -> Outcome:
    rows = []
    for contender in contenders(bench, spec):
        bench.reset(spec.limits)
        progress(f"  {spec.title}: {contender.name}")
        result = contender.run(user_creates(run_id(), spec.creates))
        rows.append(
            bench.row(
                spec.title, contender.name, result, bound=spec.bound, rate=spec.limits.writes_per_second
            )
        )
    return rows, []


def scenario_1(bench: Bench) -> Outcome:
    return throughput(
        bench, Throughput("1", bench.sizes.creates_fast, bench.sizes.jobs, LIMIT_100, APP_WRITES_100)
    )


def scenario_2(bench: Bench) -> Outcome:
    return throughput(bench, Throughput("2", bench.sizes.creates_slow, bench.sizes.jobs, LIMIT_20, None))


# --- 3: a small job during a bulk drain -----------------------------------------------------------


def upload_csv(env: dict[str, str], name: str, data: bytes) -> None:
    with ContainerClient.from_connection_string(env["AzureWebJobsStorage"], env["BULK_CONTAINER"]) as bulk:
        bulk.create_container()
        bulk.upload_blob(name, data)


def run_bulk_pickup(host: str) -> None:
    """Run the timer function once now, as the Functions admin API does."""
    httpx.post(f"{host}/admin/functions/bulk_user_updates", json={"input": ""}, timeout=30).raise_for_status()


def scenario_3(bench: Bench) -> Outcome:
    rows, delay = bench.sizes.bulk_rows, bench.sizes.urgent_delay
    title = f"3. {URGENT_OPS}-op job {delay:g} s into a {rows:,}-row bulk drain at 100/s"
    bench.reset(LIMIT_100, seed_users=rows)
    env = bench.env(APP_WRITES_100)
    upload_csv(env, "pace.csv", title_csv(rows))
    urgent = Job(f"urgent-{run_id()}", user_patches(1, URGENT_OPS, {"department": "Urgent"}))
    with running_hosts(env, 1, bench.log_dir, f"priority-{run_id()}") as hosts:
        run_bulk_pickup(hosts[0].base_url)
        time.sleep(delay)
        timeout = timeout_for(rows / LIMIT_100.writes_per_second)
        result = asyncio.run(run_jobs([hosts[0]], [urgent], timeout))
        row = bench.row(title, "product, 1 host (the small job)", result)
    met = not result.timed_out and result.completed == URGENT_OPS
    before = sum(1 for at in row.calls.success_times if at < 0)
    check = Check(
        title,
        f"seconds from submitting the job to its 200 (bulk rows done before it: {before:,})",
        f"{result.seconds:.1f} s" + ("" if met else f" ({result.completed}/{URGENT_OPS} succeeded)"),
        f"≤ {URGENT_TARGET_SECONDS:g} s",
        met and result.seconds <= URGENT_TARGET_SECONDS,
    )
    return [row], [check]


# --- 4: shared waves from the queue ---------------------------------------------------------------


def enqueue_single_operations(env: dict[str, str], count: int) -> None:
    with QueueClient.from_connection_string(env["AzureWebJobsStorage"], env["PROVISIONING_QUEUE"]) as queue:
        queue.create_queue()
        for n in range(1, count + 1):
            op = {
                "id": "title",
                "method": "PATCH",
                "url": f"/users/user{n}@contoso.com",
                "body": {"jobTitle": "T"},
            }
            queue.send_message(json.dumps({"jobId": f"single-{n}", "operations": [op]}))


def wait_for_successes(control: EmulatorControl, count: int, timeout: float) -> bool:
    """True once Graph has answered `count` distinct operations with 2xx; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(succeeded_urls(control.calls())) >= count:
            return True
        time.sleep(1.0)
    return False


def scenario_4(bench: Bench) -> Outcome:
    count = bench.sizes.messages
    title = f"4. {count:,} single-operation queue messages, no limit"
    bench.reset(None, seed_users=count)
    env = bench.env(None)
    enqueue_single_operations(env, count)
    started_at, start = time.time(), time.monotonic()
    with running_hosts(env, 1, bench.log_dir, f"waves-{run_id()}"):
        done = wait_for_successes(bench.stack.control, count, QUEUE_TIMEOUT_SECONDS)
        time.sleep(2.0)  # a straggling call would still be counted
    calls = bench.stack.control.calls()
    last = last_success_at(calls)
    seconds = last - started_at if done and last is not None else time.monotonic() - start
    result = RunResult(count, len(succeeded_urls(calls)), 0, seconds, not done, started_at)
    row = bench.row(title, "product, 1 host (queue)", result)
    target = math.ceil(count / 20) + 2
    check = Check(
        title,
        "$batch calls",
        str(row.calls.batch_calls),
        f"≤ {target}",
        done and row.calls.batch_calls <= target,
    )
    return [row], [check]


# --- 5: cold start --------------------------------------------------------------------------------

IMPORT_MODULES = ("azure.functions", "function_app")
TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def settings_env() -> dict[str, str]:
    """This environment plus the app's local settings, without changing this process's own."""
    saved = dict(os.environ)
    try:
        load_local_settings(ROOT)
        return dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def import_seconds(module: str, env: dict[str, str]) -> float:
    """Wall time of the import alone, measured inside a fresh interpreter."""
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed module name
        [sys.executable, "-c", TIMED_IMPORT.format(module=module)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def scenario_5(bench: Bench) -> Outcome:
    repeats, env = bench.sizes.import_repeats, settings_env()
    samples: dict[str, list[float]] = {module: [] for module in IMPORT_MODULES}
    for module in IMPORT_MODULES:  # once untimed: bytecode compiled, files cached, as after deploy
        import_seconds(module, env)
    for _ in range(repeats):  # alternated, so drift on the machine hits both alike
        for module in IMPORT_MODULES:
            samples[module].append(import_seconds(module, env))
    base, app = (statistics.median(samples[m]) for m in IMPORT_MODULES)
    check = Check(
        f"5. cold start, median of {repeats} imports each",
        f"import function_app ({app * 1000:.0f} ms) minus import azure.functions ({base * 1000:.0f} ms)",
        f"{(app - base) * 1000:.0f} ms",
        f"≤ {IMPORT_TARGET_SECONDS * 1000:.0f} ms",
        app - base <= IMPORT_TARGET_SECONDS,
    )
    return [], [check]


# --- 6: memory ------------------------------------------------------------------------------------


def scenario_6(bench: Bench) -> Outcome:
    jobs, size = bench.sizes.memory_jobs, bench.sizes.memory_job_size
    count = jobs * size
    title = f"6. {jobs} jobs of {size:,} PATCHes on 1 host, no limit"
    bench.reset(None, seed_users=count)
    timeout = timeout_for(count / APP_WRITES_100)
    product = Product("product, 1 host", 1, lambda: bench.env(APP_WRITES_100), size, timeout, bench.log_dir)
    result = product.run(user_patches(1, count, {"jobTitle": "Memory"}))
    peak_mib = result.peak_rss_mib or 0.0
    peak_mb = peak_mib * 1024 * 1024 / 1e6
    check = Check(
        title,
        "peak RSS of the host (VmHWM)",
        f"{peak_mb:.0f} MB ({peak_mib:.0f} MiB)" + (" (timed out)" if result.timed_out else ""),
        f"≤ {MEMORY_TARGET_MB:g} MB",
        not result.timed_out and peak_mb <= MEMORY_TARGET_MB,
    )
    return [bench.row(title, product.name, result)], [check]


SCENARIOS: dict[str, Callable[[Bench], Outcome]] = {
    "1": scenario_1,
    "2": scenario_2,
    "3": scenario_3,
    "4": scenario_4,
    "5": scenario_5,
    "6": scenario_6,
}
