"""When to try an operation again: Graph's Retry-After when given, backoff with jitter when not.

All retry decisions live here; the Graph client never retries by itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from batching.graph.throttling import NO_ANSWER, parse_retry_after

__all__ = ["NO_ANSWER", "TRANSIENT_STATUSES", "RetryPolicy", "parse_retry_after"]

TRANSIENT_STATUSES: Final = frozenset({429, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt `attempts + 1`, and when to stop."""

    max_attempts: int
    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    # 429s do not use up attempts: an operation waits for Graph this long in all, then fails.
    throttle_max_wait_seconds: float = 3600.0
    # A wait up to this long is taken in the process; a longer one goes back to the queue.
    local_wait_seconds: float = 30.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def is_transient(self, status: int) -> bool:
        return status in TRANSIENT_STATUSES or status == NO_ANSWER

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` sends that failed for real were made and no more are allowed."""
        return attempts >= self.max_attempts

    def waited_too_long(self, throttled_since: float, now: float) -> bool:
        """True when Graph has kept an operation waiting longer than the time bound."""
        return now - throttled_since >= self.throttle_max_wait_seconds

    def delay(self, attempts: int, retry_after: str | None) -> float:
        """Graph's own Retry-After when it gave one; else exponential backoff with full jitter."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return asked
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** min(64, max(0, attempts - 1)))
        return ceiling / 2 + self.random() * ceiling / 2
