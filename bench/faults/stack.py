"""The processes of a fault run: Azurite on a data folder (so it can be stopped and started
again with what it held), the Graph emulator (bench.pace's, its own process), and dev hosts that
can be killed and started again with the same settings."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pace.stack import ROOT, Emulator, EmulatorControl, stop_host
from devhost.keys import KEY_SETTING, new_key
from devhost.stack import Azurite, DevHost, free_port, start_devhost, wait_for_port

AZURITE_STOP_GRACE_SECONDS = 15.0


class RestartableAzurite:
    """Azurite persisting to `folder`, on ports that stay the same across restarts.

    `stop()` is a SIGTERM: Azurite saves its metadata and exits (telemetry off, or it waits on
    the network first). A SIGKILL would lose the writes of the last seconds, which Azure Storage
    never does, so it is used only when Azurite has not exited after a grace period."""

    def __init__(self, folder: Path, log_path: Path) -> None:
        self.folder = folder
        self.log_path = log_path
        self.ports = Azurite(free_port(), free_port(), free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self.forced_stops = 0

    @property
    def connection_string(self) -> str:
        return self.ports.connection_string

    def start(self) -> None:
        executable = ROOT / "node_modules" / ".bin" / "azurite"
        if not executable.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` (scripts/test does it for you)")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            str(executable),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--location",
            str(self.folder),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.ports.blob_port),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(self.ports.queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.ports.table_port),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        for port in (self.ports.blob_port, self.ports.queue_port, self.ports.table_port):
            wait_for_port(port, process=self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=AZURITE_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.forced_stops += 1
            process.kill()
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextmanager
def restartable_azurite(folder: Path, log_path: Path) -> Iterator[RestartableAzurite]:
    azurite = RestartableAzurite(folder, log_path)
    azurite.start()
    try:
        yield azurite
    finally:
        azurite.stop()


def fault_env(
    connection_string: str, emulator: Emulator, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Settings for one scenario: its own queues and tables; short timeouts, leases and claim
    takeover, so a run sees many recoveries in minutes; one host key for every host."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": connection_string,
        "PROVISIONING_QUEUE": f"fault-{suffix}",
        "WORK_QUEUE": f"faultwork-{suffix}",
        "BULK_QUEUE": f"faultbulk-{suffix}",
        "RESULTS_TABLE": f"Fault{suffix}",
        "PACING_TABLE": f"FaultPacing{suffix}",
        "BULK_CONTAINER": f"fault-{suffix}",
        "BULK_SCHEDULE": "0 0 0 1 1 *",
        "GRAPH_BASE_URL": emulator.graph,
        "GRAPH_CREDENTIAL": "emulator",
        "STATUS_RETRY_AFTER_SECONDS": "1",
        "GRAPH_TIMEOUT_SECONDS": "5",
        "BACKOFF_BASE_SECONDS": "0.5",
        "BACKOFF_MAX_SECONDS": "8",
        "REPLICATION_RETRY_SECONDS": "2",
        "CLAIM_TIMEOUT_SECONDS": "20",
        "DEVHOST_MESSAGE_LEASE_SECONDS": "10",
        "QUEUE_EXTRA_LEASE_SECONDS": "15",
        KEY_SETTING: new_key(),
    }
    env.update(overrides or {})
    return env


@dataclass
class Hosts:
    """Dev hosts with the same settings; any of them can be killed (SIGKILL) and started again.
    Each host keeps one log file across its restarts, with a line where each life begins."""

    env: dict[str, str]
    log_dir: Path
    label: str
    hosts: list[DevHost] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)  # epoch seconds of each kill
    crashes: list[str] = field(default_factory=list)  # hosts found dead without a kill
    lock: threading.RLock = field(default_factory=threading.RLock)  # a kill and its restart are one step

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"{self.label}-host{index + 1}.log"

    def start(self, count: int) -> None:
        for index in range(count):
            self.hosts.append(self._start(index))

    def _start(self, index: int) -> DevHost:
        path = self.log_path(index)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"=== fault run: host {index + 1} starting at {time.strftime('%H:%M:%S')} ===\n")
        return start_devhost(self.env, path)

    def kill(self, index: int) -> None:
        """SIGKILL: no cleanup, no lease released, nothing written."""
        host = self.hosts[index]
        host.process.kill()
        host.process.wait(timeout=10)
        self.kills.append(time.time())
        with self.log_path(index).open("a", encoding="utf-8") as log:
            log.write(
                f"=== fault run: host {index + 1} killed (SIGKILL) at {time.strftime('%H:%M:%S')} ===\n"
            )

    def restart(self, index: int) -> None:
        self.hosts[index] = self._start(index)

    def revive_crashed(self) -> None:
        """A host that exited on its own is noted and started again, so the run goes on."""
        for index, host in enumerate(self.hosts):
            if host.process.poll() is not None:
                self.crashes.append(f"host {index + 1} exited with {host.process.returncode}")
                self.restart(index)

    def stop(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                stop_host(host)

    @property
    def first(self) -> DevHost:
        return self.hosts[0]


class EmulatorAdmin(EmulatorControl):
    """The emulator's control API as a fault run uses it: the pace run's, plus what a fault
    run reads back (injected faults, objects per natural key)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator, timeout=300.0)

    def configure(self, config: Mapping[str, Any]) -> None:
        response = self._client.put("/_emulator/config", json=dict(config))
        if response.status_code >= 400:
            raise RuntimeError(f"emulator config refused: {response.status_code} {response.text[:300]}")

    def get(self, path: str) -> Any:
        response = self._client.get(path)
        response.raise_for_status()
        return response.json()

    def creates(self) -> dict[str, Any]:
        report: dict[str, Any] = self.get("/_emulator/creates")
        return report

    def faults(self) -> dict[str, Any]:
        report: dict[str, Any] = self.get("/_emulator/faults")
        return report
