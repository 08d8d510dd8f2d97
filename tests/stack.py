"""The local stack for tests and `scripts/start`: Azurite, the Graph emulator, the dev host.

Every piece binds a free loopback port, so runs never collide with each other or with a
developer's own Azurite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

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
def run_azurite() -> Iterator[Azurite]:
    executable = ROOT / "node_modules" / ".bin" / "azurite"
    if not executable.exists():
        raise RuntimeError("Azurite is not installed: run `npm ci` (scripts/test does it for you)")
    azurite = Azurite(free_port(), free_port(), free_port())
    process = subprocess.Popen(
        [
            str(executable), "--silent", "--skipApiVersionCheck", "--loose", "--inMemoryPersistence",
            "--blobHost", "127.0.0.1", "--blobPort", str(azurite.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(azurite.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(azurite.table_port),
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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=15)


def start_devhost(env: Mapping[str, str], log_path: Path) -> DevHost:
    port = free_port()
    full_env = {**os.environ, **env, "DEVHOST_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost"], cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    host = DevHost(process, port, log_path)
    try:
        wait_for_port(port, process=process)
    except Exception as error:
        raise RuntimeError(f"dev host did not start:\n{host.log()}") from error
    return host


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def poll_job(client: httpx.Client, url: str, timeout: float = 60.0) -> list[httpx.Response]:
    """Poll like Power Automate: follow Location while 202; return every answer."""
    answers = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(url)
        answers.append(response)
        if response.status_code != 202:
            return answers
        time.sleep(0.3)
    raise TimeoutError(f"job at {url} still running after {timeout} s")
