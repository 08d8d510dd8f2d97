"""The processes a run needs: the emulator as its own process, dev hosts, and their settings.

The emulator runs outside this process so that its work (and the GIL) never slows the
baselines, which run in this process; Azurite comes from `devhost.stack.run_azurite`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devhost.stack import Azurite, DevHost, free_port, start_devhost, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_AUTH = {"Authorization": "Bearer emulator-token"}
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Emulator:
    """Where the emulator listens: `root` for its control API, `graph` for Graph calls."""

    port: int

    @property
    def root(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def graph(self) -> str:
        return f"{self.root}/v1.0"


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate, then kill: a child that ignores SIGTERM must not keep the run alive."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@contextmanager
def run_emulator(log_path: Path) -> Iterator[Emulator]:
    """`python -m emulator` on a free loopback port, stopped on exit (also on Ctrl-C)."""
    port = free_port()
    env = {
        **os.environ,
        "GRAPH_EMULATOR_HOST": LOOPBACK,
        "GRAPH_EMULATOR_PORT": str(port),
        "GRAPH_EMULATOR_SEED_USERS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "emulator"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process=process)
        yield Emulator(port)
    finally:
        stop_process(process)


@dataclass(frozen=True)
class Limits:
    """Graph's write limit as the emulator enforces it (items beyond it are answered 429)."""

    writes_per_second: float
    write_burst: int

    def config(self, *, legacy: bool) -> dict[str, Any]:
        """The emulator's `limits` option, or the older per-item token bucket (`throttle`)
        for an emulator that does not have `limits` yet (it counts reads too)."""
        if legacy:
            return {"throttle": {"capacity": self.write_burst, "refillPerSecond": self.writes_per_second}}
        return {
            "limits": {
                "writesPerSecond": self.writes_per_second,
                "writeBurst": self.write_burst,
                "unitsPerSecond": 800,
                "unitBurst": 800,
                "windowSeconds": 10,
                "retryAfter": None,
            }
        }


class EmulatorControl:
    """The emulator's control API: reset, limits, seed users, call log."""

    def __init__(self, emulator: Emulator, *, timeout: float = 120.0) -> None:
        self._client = httpx.Client(base_url=emulator.root, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def reset(self) -> None:
        self._client.post("/_emulator/reset").raise_for_status()

    def configure(self, config: Mapping[str, Any]) -> None:
        self._client.put("/_emulator/config", json=dict(config)).raise_for_status()

    def seed(self, users: int) -> None:
        self._client.post("/_emulator/seed", json={"users": users}).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        response = self._client.get("/_emulator/calls")
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()["calls"]
        return calls


def app_env(azurite: Azurite, emulator: Emulator, writes_per_second: int | None) -> dict[str, str]:
    """Settings for one product run: its own queues, tables and container, so runs never share
    work or pacing state (the hosts of one run do). `writes_per_second` is the app's shared
    write budget; None leaves the app default. Names the app does not read yet are ignored."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "PROVISIONING_QUEUE": f"pace-{suffix}",
        "WORK_QUEUE": f"pacework-{suffix}",
        "BULK_QUEUE": f"pacebulk-{suffix}",
        "RESULTS_TABLE": f"Pace{suffix}",
        "PACING_TABLE": f"Pacing{suffix}",
        "BULK_CONTAINER": f"pace-{suffix}",
        "BULK_SCHEDULE": "0 0 0 1 1 *",  # once a year: the bench runs the pickup itself
        "BULK_WAIT_SECONDS": "30",
        "GRAPH_BASE_URL": emulator.graph,
        "GRAPH_CREDENTIAL": "emulator",
        "STATUS_RETRY_AFTER_SECONDS": "1",
    }
    if writes_per_second is not None:
        env["GRAPH_WRITES_PER_SECOND"] = str(writes_per_second)
    return env


def stop_host(host: DevHost) -> None:
    try:
        host.stop()
    except subprocess.TimeoutExpired:
        host.stop(kill=True)


def own_children() -> set[int]:
    """Process ids of this process's children (Linux /proc)."""
    found: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.update(int(pid) for pid in children.read_text().split())
    return found


@contextmanager
def running_hosts(env: Mapping[str, str], count: int, log_dir: Path, label: str) -> Iterator[list[DevHost]]:
    """`count` dev hosts with the same settings (same queue, table, account), all stopped on exit,
    also one that Ctrl-C caught while it was starting (start_devhost had not returned it yet)."""
    hosts: list[DevHost] = []
    before = own_children()
    try:
        for index in range(count):
            hosts.append(start_devhost(env, log_dir / f"{label}-host{index + 1}.log"))
        yield hosts
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                stop_host(host)
        for pid in own_children() - before:
            end_child(pid)


def end_child(pid: int, grace: float = 10.0) -> None:
    """Terminate a child of ours known only by its id, then reap it (kill it if it lingers)."""
    with contextlib.suppress(ChildProcessError, ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.05)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")
