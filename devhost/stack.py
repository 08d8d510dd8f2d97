"""The local stack: Azurite (from the project's npm install), the Graph emulator, the dev host.

Used by the test fixtures (free loopback ports, so runs never collide) and by
`python -m devhost.stack` (what `scripts/start` runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from devhost.config import load_local_settings
from devhost.keys import KEY_HEADER, KEY_SETTING, host_keys, new_key
from emulator.app import GraphEmulator

ROOT = Path(__file__).resolve().parent.parent
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/devstoreaccount1;"
            f"QueueEndpoint={base}:{self.queue_port}/devstoreaccount1;"
            f"TableEndpoint={base}:{self.table_port}/devstoreaccount1;"
        )


@contextmanager
def run_azurite(*, fixed_ports: bool = False) -> Iterator[Azurite]:
    """Azurite in memory; on its usual ports 10000-10002 when `fixed_ports`, else on free ones."""
    executable = ROOT / "node_modules" / ".bin" / "azurite"
    if not executable.exists():
        raise RuntimeError("Azurite is not installed: run `npm ci` (scripts/test does it for you)")
    azurite = Azurite(10000, 10001, 10002) if fixed_ports else Azurite(free_port(), free_port(), free_port())
    process = subprocess.Popen(
        [
            str(executable),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(azurite.blob_port),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(azurite.queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(azurite.table_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in (azurite.blob_port, azurite.queue_port, azurite.table_port):
            wait_for_port(port, process=process)
        yield azurite
    finally:
        process.kill()  # in-memory storage: nothing to flush, and SIGTERM waits on open sockets
        process.wait(timeout=10)


@dataclass
class ServedEmulator:
    emulator: GraphEmulator
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1.0"


@contextmanager
def serve_emulator() -> Iterator[ServedEmulator]:
    """The Graph emulator over real loopback HTTP, in a thread of this process."""
    emulator = GraphEmulator()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(emulator.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield ServedEmulator(emulator, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class DevHost:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    key: str  # its host key: function-level routes answer 401 without it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """What a caller sends to get past the function key check."""
        return {KEY_HEADER: self.key}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=15)


def start_devhost(env: Mapping[str, str], log_path: Path) -> DevHost:
    """A dev host on a free port; its host key is `DEVHOST_HOST_KEY` from `env` (hosts of one
    app share it, as instances do in Azure) or a new one, never the project's keys file.
    Telemetry is off unless `env` (or the environment) sets `TELEMETRY_EXPORTER`: tests and
    measurements watch the work, not its telemetry."""
    port = free_port()
    full_env = {**os.environ, **env, "DEVHOST_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    full_env.setdefault("TELEMETRY_EXPORTER", "off")
    full_env[KEY_SETTING] = full_env.get(KEY_SETTING) or new_key()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    host = DevHost(process, port, log_path, full_env[KEY_SETTING])
    try:
        wait_for_port(port, process=process)
    except Exception as error:
        raise RuntimeError(f"dev host did not start:\n{host.log()}") from error
    return host


EMBEDDED_GRAPH = "http://127.0.0.1:{port}/v1.0"


def _wants_embedded_azurite(connection_string: str | None) -> bool:
    if not connection_string or connection_string.strip() == "UseDevelopmentStorage=true":
        return True
    return "AccountName=devstoreaccount1" in connection_string and "127.0.0.1:1000" in connection_string


SAMPLE_JOB = {
    "jobId": "hello-graph",
    "operations": [
        {
            "id": "create",
            "method": "POST",
            "url": "/users",
            "body": {
                "userPrincipalName": "ada@contoso.com",
                "displayName": "Ada",
                "accountEnabled": True,
                "mailNickname": "ada",
                "usageLocation": "NL",
            },
        },
        {
            "id": "title",
            "method": "PATCH",
            "url": "/users/ada@contoso.com",
            "body": {"jobTitle": "Engineer"},
            "dependsOn": "create",
        },
        {"id": "bulk", "method": "PATCH", "url": "/users/user1@contoso.com", "body": {"department": "R&D"}},
    ],
}


def main() -> None:
    """Run the whole local stack until Ctrl-C. Settings from the environment (then
    local.settings.json) win: Azurite starts only when AzureWebJobsStorage is unset or names
    Azurite's own loopback account; the emulator only when GRAPH_BASE_URL is unset or is the
    emulator's own address. Point either elsewhere and that part is used instead."""
    settings_file = load_local_settings(ROOT)
    print(f"Settings: environment, then {settings_file.name if settings_file else 'defaults'}")
    children: list[subprocess.Popen[bytes]] = []
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    try:
        with contextlib.ExitStack() as stack:
            _start_stack(stack, children)
            # Blocked only now, so the children keep their default handlers; sigwait then
            # turns Ctrl-C or SIGTERM into an orderly stop.
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            signal.sigwait(stop_signals)
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(timeout=15)


def _start_stack(stack: contextlib.ExitStack, children: list[subprocess.Popen[bytes]]) -> None:
    if _wants_embedded_azurite(os.environ.get("AzureWebJobsStorage")):
        azurite = stack.enter_context(run_azurite(fixed_ports=True))
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
        print(f"Azurite: blob {azurite.blob_port}, queue {azurite.queue_port}, table {azurite.table_port}")
    port = int(os.environ.get("GRAPH_EMULATOR_PORT", "7072"))
    if os.environ.get("GRAPH_BASE_URL", EMBEDDED_GRAPH.format(port=port)) == EMBEDDED_GRAPH.format(port=port):
        seed = os.environ.get("GRAPH_EMULATOR_SEED_USERS", "50")
        env = {**os.environ, "GRAPH_EMULATOR_PORT": str(port), "GRAPH_EMULATOR_SEED_USERS": seed}
        children.append(subprocess.Popen([sys.executable, "-m", "emulator"], cwd=ROOT, env=env))
        wait_for_port(port, process=children[-1])
        os.environ["GRAPH_BASE_URL"] = EMBEDDED_GRAPH.format(port=port)
        os.environ.setdefault("GRAPH_CREDENTIAL", "emulator")
    port = int(os.environ.get("DEVHOST_PORT", "7071"))
    keys = host_keys(ROOT)  # the dev host reads the same: DEVHOST_HOST_KEY, else local.keys.json
    env = {**os.environ, "DEVHOST_PORT": str(port)}
    children.append(subprocess.Popen([sys.executable, "-m", "devhost"], cwd=ROOT, env=env))
    wait_for_port(port, process=children[-1])
    api = f"http://127.0.0.1:{port}/api"
    graph = os.environ["GRAPH_BASE_URL"]
    key = f"{KEY_HEADER}: {keys.default}"
    exporter = os.environ.get("TELEMETRY_EXPORTER", "off")
    telemetry = (
        'Spans and metrics print here, one JSON line each (TELEMETRY_EXPORTER=console; README "Operating").\n'
        if exporter == "console"
        else f"Telemetry: TELEMETRY_EXPORTER={exporter}.\n"
    )
    print(
        "\nThe stack is up. Submit a job:\n\n"
        f"  curl -si -X POST {api}/jobs -H 'Content-Type: application/json' -H '{key}' \\\n"
        f"       -d '{json.dumps(SAMPLE_JOB)}'\n\n"
        f"then poll the Location it answers with (e.g. curl -s -H '{key}' {api}/jobs/hello-graph).\n"
        f"The function key is from {keys.source}; sent as ?code= instead, it is kept in the Location.\n"
        f"Graph: {graph}  (emulator calls: {graph.rsplit('/', 1)[0]}/_emulator/calls)\n"
        f"{telemetry}"
        "Ctrl-C stops everything.\n",
        flush=True,
    )


if __name__ == "__main__":
    main()
