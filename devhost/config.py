"""Where the dev host's settings come from: the environment first, then local.settings.json."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from batching.settings import load_local_settings

__all__ = ["QueueOptions", "load_local_settings", "resolve"]


def resolve(expression: str) -> str:
    """Binding expressions such as `%PROVISIONING_QUEUE%` from app settings."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"app setting {name} is not set (needed by a trigger binding)")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", lookup, expression)


def _timespan(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds)).total_seconds()


_QUEUE_KEYS = (
    "batchSize",
    "newBatchThreshold",
    "maxDequeueCount",
    "visibilityTimeout",
    "maxPollingInterval",
    "messageEncoding",
)


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the Functions host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path) -> QueueOptions:
        queues: dict[str, Any] = {}
        if path.exists():
            queues = json.loads(path.read_text(encoding="utf-8")).get("extensions", {}).get("queues", {})
        # App settings override host.json, as in Azure: AzureFunctionsJobHost__extensions__queues__<name>
        prefix = "azurefunctionsjobhost__extensions__queues__"
        for key, value in os.environ.items():
            if key.lower().startswith(prefix):
                wanted = key[len(prefix) :].lower()
                name = next((known for known in _QUEUE_KEYS if known.lower() == wanted), None)
                if name is not None:
                    queues[name] = value
        defaults = cls()
        return cls(
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=int(queues.get("newBatchThreshold", defaults.new_batch_threshold)),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            visibility_timeout=_timespan(queues["visibilityTimeout"])
            if "visibilityTimeout" in queues
            else 0.0,
            max_polling_interval=_timespan(queues["maxPollingInterval"])
            if "maxPollingInterval" in queues
            else 60.0,
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )
