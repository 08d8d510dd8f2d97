"""How long a poller should wait: `Retry-After` on the 202 answers of the asynchronous pattern.

Power Automate waits `Retry-After` seconds between polls, and every poll counts against the
flow's Power Platform requests. A fixed short interval spends them on a long job for nothing,
so the wait is the time the work left needs at the pace the app sends at:

    Retry-After = min(upper, max(lower, ceil(operations not yet final / writes per second)))

`writes per second` is the fleet's Graph write budget (GRAPH_WRITES_PER_SECOND): no job
finishes faster than that, whoever else is sending. The bounds are STATUS_RETRY_AFTER_SECONDS
(default 5) and STATUS_RETRY_AFTER_MAX_SECONDS (default 60), so a small job is polled soon and
a large one still at least once a minute (a throttled job can end sooner than its estimate).
"""

from __future__ import annotations

import math


def retry_after_seconds(pending: int, writes_per_second: float, *, lower: int, upper: int) -> int:
    """Whole seconds to wait before polling a job with `pending` operations not yet final."""
    upper = max(lower, upper)
    if pending <= 0 or writes_per_second <= 0:
        return lower
    return min(upper, max(lower, math.ceil(pending / writes_per_second)))
