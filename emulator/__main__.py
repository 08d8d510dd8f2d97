"""`python -m emulator`: serve the Graph emulator on loopback.

Settings from the environment: GRAPH_EMULATOR_HOST (127.0.0.1), GRAPH_EMULATOR_PORT (7072),
GRAPH_EMULATOR_SEED_USERS (0).
"""

from __future__ import annotations

import os

import uvicorn

from emulator.app import GraphEmulator


def main() -> None:
    host = os.environ.get("GRAPH_EMULATOR_HOST", "127.0.0.1")
    port = int(os.environ.get("GRAPH_EMULATOR_PORT", "7072"))
    emulator = GraphEmulator()
    emulator.tenant.seed_users(int(os.environ.get("GRAPH_EMULATOR_SEED_USERS", "0")))
    print(f"Graph emulator on http://{host}:{port}/v1.0 (control: /_emulator/...)", flush=True)
    uvicorn.run(emulator.app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
