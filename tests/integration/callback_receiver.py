"""A stand-in for Power Automate's callback endpoint: a tiny HTTP server on loopback that
records every POST and can refuse the first ones."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    status: int  # what the receiver answered


@dataclass
class CallbackReceiver:
    port: int
    fail_first: int = 0
    fail_status: int = 503
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, secret: str) -> str:
        """A callback URL shaped like a flow's: the signature in the query."""
        return f"http://127.0.0.1:{self.port}/workflows/run/actions/wait?api-version=2016-06-01&sig={secret}"

    @property
    def taken(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    @property
    def attempts(self) -> int:
        with self.lock:
            return len(self.received)


@contextmanager
def callback_receiver(*, fail_first: int = 0, fail_status: int = 503) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(0, fail_first, fail_status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with receiver.lock:
                refused = len(receiver.received) < receiver.fail_first
                status = receiver.fail_status if refused else 202
                receiver.received.append(
                    Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw), status
                    )
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
