"""`python -m devhost`: run function_app locally without Core Tools.

Settings: the environment, then local.settings.json `Values` (the environment wins).
DEVHOST_HOST (127.0.0.1), DEVHOST_PORT (7071), FUNCTION_APP_MODULE (function_app).
Function keys: DEVHOST_HOST_KEY, else local.keys.json (written on the first start); see devhost.keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn

from devhost.config import QueueOptions, load_local_settings
from devhost.host import build_host
from devhost.keys import host_keys


def main() -> None:
    root = Path.cwd()
    settings_file = load_local_settings(root)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = os.environ.get("DEVHOST_HOST", "127.0.0.1")
    port = int(os.environ.get("DEVHOST_PORT", "7071"))
    keys = host_keys(root)
    app = build_host(
        os.environ.get("FUNCTION_APP_MODULE", "function_app"),
        QueueOptions.from_host_json(root / "host.json"),
        keys,
    )
    source = settings_file.name if settings_file else "no settings file"
    print(
        f"Functions dev host on http://{host}:{port}/api (environment, then {source}; "
        f"function keys from {keys.source})",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
