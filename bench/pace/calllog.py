"""What Graph saw, from the emulator's call log: calls, subrequests, 429s, and when each
operation succeeded. Counted on the Graph side so every contender is measured the same way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Call = dict[str, Any]


@dataclass(frozen=True)
class CallStats:
    batch_calls: int
    direct_calls: int
    subrequests: int
    throttled: int  # subrequests answered 429
    whole_call_throttled: int  # $batch calls answered 429 as a whole (items not logged)
    success_times: tuple[float, ...]  # seconds after the run started, one per 2xx subrequest

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.subrequests if self.subrequests else 0.0


def is_direct(call: Call) -> bool:
    """One request per operation. Calls logged before the emulator had kinds are `$batch`."""
    return call.get("kind") == "direct"


def items(call: Call) -> list[dict[str, Any]]:
    """The subrequests a call carried; a direct call is its own single subrequest."""
    logged: list[dict[str, Any]] = call.get("items") or []
    if not logged and is_direct(call):
        return [{"status": call.get("status"), "url": call.get("url")}]
    return logged


def succeeded(status: object) -> bool:
    return isinstance(status, int) and 200 <= status < 300


def call_stats(calls: Iterable[Call], started_at: float) -> CallStats:
    """Totals over `calls`; `started_at` (epoch seconds) is time zero of the timeline."""
    calls = list(calls)
    batch = [c for c in calls if not is_direct(c)]
    sent = [(c["at"], item) for c in calls for item in items(c)]
    return CallStats(
        batch_calls=len(batch),
        direct_calls=len(calls) - len(batch),
        subrequests=len(sent),
        throttled=sum(1 for _, item in sent if item.get("status") == 429),
        whole_call_throttled=sum(1 for c in batch if c.get("status") == 429 and not c.get("items")),
        success_times=tuple(sorted(at - started_at for at, item in sent if succeeded(item.get("status")))),
    )


def succeeded_urls(calls: Iterable[Call]) -> set[str]:
    """Distinct URLs answered 2xx: operations done, however often they were sent."""
    return {str(item.get("url")) for c in calls for item in items(c) if succeeded(item.get("status"))}


def last_success_at(calls: Iterable[Call]) -> float | None:
    times = [c["at"] for c in calls for item in items(c) if succeeded(item.get("status"))]
    return max(times) if times else None
