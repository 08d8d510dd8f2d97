"""When to try an operation again: Graph's Retry-After when given, backoff with jitter when not.

All retry decisions live here; the Graph client never retries by itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

TRANSIENT_STATUSES: Final = frozenset({429, 503, 504})
NO_ANSWER: Final = 0  # the call got no HTTP answer (timeout, connection reset)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: `10`, `2.128`, `30,120` (first), or an HTTP-date.

    An HTTP-date has a comma of its own (`Sun, 22 Nov 2026 18:20:27 GMT`), so only a list
    that starts with a number is split.
    """
    if value is None or not value.strip():
        return None
    first = value.split(",", 1)[0].strip()
    try:
        seconds = float(first)
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name in any case (Graph sends both `Retry-After` and `retry-after`)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt `attempts + 1`, and when to stop."""

    max_attempts: int
    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def is_transient(self, status: int) -> bool:
        return status in TRANSIENT_STATUSES or status == NO_ANSWER

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` sends were made and no more are allowed."""
        return attempts >= self.max_attempts

    def delay(self, attempts: int, retry_after: str | None) -> float:
        """Graph's own Retry-After when it gave one; else exponential backoff with full jitter."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return asked
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        return ceiling / 2 + self.random() * ceiling / 2
