"""What an operator does once a run's work has settled with messages on the poison queues: run
the operator CLI's `poison replay` (`python -m batching poison replay`) with a healthy host
running, as the README's "Operator CLI" says, and let the work settle again.

Before counting, the app's queues are left to drain: a message whose operations are all final
can still reappear after its lease and be poisoned, or finish, a little after the last row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from bench.faults.stack import Hosts
from bench.pace.stack import ROOT

QUEUE_SETTINGS = ("PROVISIONING_QUEUE", "WORK_QUEUE", "BULK_QUEUE")
QUIET_SECONDS = 120.0  # longest wait for the app's queues to empty
QUIET_POLLS = 3  # polls in a row with nothing on the app's queues
POLL_SECONDS = 2.0
CLI_TIMEOUT_SECONDS = 300.0


def queue_counts(env: Mapping[str, str], suffix: str = "") -> dict[str, int] | None:
    """Approximate messages (visible or not) on each of the app's queues (or their `-poison`
    queues); None while storage cannot be read."""
    counts = {}
    try:
        for setting in QUEUE_SETTINGS:
            name = env[setting] + suffix
            with QueueClient.from_connection_string(env["AzureWebJobsStorage"], name) as queue:
                try:
                    counts[name] = int(queue.get_queue_properties().approximate_message_count or 0)
                except ResourceNotFoundError:
                    counts[name] = 0
    except AzureError:
        return None
    return counts


def poisoned(env: Mapping[str, str]) -> dict[str, int]:
    """Messages on each poison queue that holds any."""
    for _ in range(30):
        counts = queue_counts(env, "-poison")
        if counts is not None:
            return {name: count for name, count in counts.items() if count}
        time.sleep(1.0)
    raise RuntimeError("the poison queues could not be read")


def wait_until_quiet(hosts: Hosts, timeout: float = QUIET_SECONDS) -> tuple[bool, float]:
    """Wait until the app's queues hold nothing (a few polls in a row); whether they did, and
    how long it took."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < timeout:
        with hosts.lock:
            hosts.revive_crashed()
        counts = queue_counts(hosts.env)
        quiet = quiet + 1 if counts is not None and not any(counts.values()) else 0
        if quiet >= QUIET_POLLS:
            return True, time.monotonic() - start
        time.sleep(POLL_SECONDS)
    return False, time.monotonic() - start


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m batching ...` as an operator runs it, with the scenario's settings."""
    return subprocess.run(  # noqa: S603 - this interpreter, the app's own CLI
        [sys.executable, "-m", "batching", *args],
        cwd=ROOT,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


@dataclass
class Replay:
    """One `poison replay` and what it found and left."""

    poisoned: dict[str, int]  # messages per poison queue when the work had settled
    quiet_before: bool  # the app's queues had drained before the count
    exit_code: int = 0
    stderr: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)  # the CLI's --json answer
    reopened: int = 0  # rows Failed with processingFailed before the replay (back to Pending)
    seconds: float = 0.0  # from the replay to the last final row
    quiet_after: bool = True
    left: dict[str, int] = field(default_factory=dict)  # poison messages after the work settled again
    left_entries: list[dict[str, Any]] = field(default_factory=list)  # `poison list --json` then

    @property
    def messages(self) -> int:
        return sum(self.poisoned.values())

    def by_job(self, entries: list[dict[str, Any]] | None = None) -> dict[str, int]:
        """Messages per jobId (a work message names its job too)."""
        counts: dict[str, int] = {}
        for entry in self.entries if entries is None else entries:
            job_id = str(entry.get("jobId"))
            counts[job_id] = counts.get(job_id, 0) + 1
        return counts

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            kind = str(entry.get("kind"))
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def describe(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(self.kinds().items()))
        queues = ", ".join(f"{name} {count}" for name, count in sorted(self.poisoned.items()))
        left = sum(self.left.values())
        parts = [
            f"{self.messages} poison messages ({queues}) when the work had settled"
            + ("" if self.quiet_before else " (the app's queues had not drained)"),
            f"`poison replay` sent back {len(self.entries)} ({kinds or 'none'}; exit code {self.exit_code}) "
            f"and reopened {self.reopened} processingFailed rows",
            f"the work settled again {self.seconds:.0f} s later"
            + ("" if self.quiet_after else " (the app's queues had not drained)"),
            f"{left} poison messages left",
        ]
        return "; ".join(parts)


def parse_entries(text: str) -> list[dict[str, Any]]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
