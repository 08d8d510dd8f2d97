"""What Graph says about throttling, and what the app tells Graph about its own requests.

Protocol knowledge only (no policy): how to read `Retry-After` and the `x-ms-throttle-*`
headers of an answer, what a request costs against Graph's identity limits, and the
`x-ms-throttle-priority` request header. Decisions (how long to wait, how fast to send) live in
`batching.pacing` and `batching.retry`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import IntEnum
from typing import Final
from urllib.parse import unquote

THROTTLED: Final = 429
NO_ANSWER: Final = 0  # the call got no HTTP answer (timeout, connection reset)
PRIORITY_HEADER: Final = "x-ms-throttle-priority"
LIMIT_PERCENTAGE_HEADER: Final = "x-ms-throttle-limit-percentage"
SCOPE_HEADER: Final = "x-ms-throttle-scope"
WRITE_METHODS: Final = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class Priority(IntEnum):
    """Who waits for the work; lower values go first. Sent as `x-ms-throttle-priority`."""

    HIGH = 0  # a person or a flow waits for the answer (HTTP door)
    NORMAL = 1  # another system's message (queue door)
    LOW = 2  # background bulk updates (timer door)

    @property
    def header_value(self) -> str:
        return self.name.capitalize()

    @classmethod
    def named(cls, name: str) -> Priority:
        """From the lower-case name work messages carry (`high`, `normal`, `low`)."""
        return cls[name.upper()]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name in any case (Graph sends both `Retry-After` and `retry-after`)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


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


def parse_limit_percentage(value: str | None) -> float | None:
    """`x-ms-throttle-limit-percentage`: the share of a limit in use, sent from 0.8 upwards."""
    if value is None:
        return None
    try:
        share = float(value.strip().rstrip("%"))
    except ValueError:
        return None
    if math.isnan(share) or math.isinf(share) or share < 0:
        return None
    return share / 100 if share > 10 else share  # tolerate `85` meaning 85 %


@dataclass(frozen=True, slots=True)
class ThrottleSignal:
    """What one answer (an item, or a whole `$batch` call) says about Graph's limits."""

    throttled: bool = False
    retry_after: float | None = None
    limit_percentage: float | None = None
    scope: str | None = None

    @classmethod
    def read(cls, status: int, headers: Mapping[str, str]) -> ThrottleSignal:
        return cls(
            throttled=status == THROTTLED,
            retry_after=parse_retry_after(header(headers, "Retry-After")) if status == THROTTLED else None,
            limit_percentage=parse_limit_percentage(header(headers, LIMIT_PERCENTAGE_HEADER)),
            scope=header(headers, SCOPE_HEADER),
        )

    @property
    def is_read_limit(self) -> bool:
        """A 429 whose scope names the resource-unit (read) limit rather than writes."""
        scope = (self.scope or "").lower()
        return "resourceunit" in scope or "/read" in scope


@dataclass(frozen=True, slots=True)
class RequestCost:
    """What a set of requests takes from Graph's identity limits: writes and resource units."""

    writes: int = 0
    units: int = 0

    def __add__(self, other: RequestCost) -> RequestCost:
        return RequestCost(self.writes + other.writes, self.units + other.units)


def request_cost(method: str, url: str) -> RequestCost:
    """The documented cost of one identity request (throttling-limits, identity and access).

    Every write is one write and one resource unit. A read of one object costs 1 unit, a list
    costs 2; `$select` lowers a cost by 1 and `$expand` raises it by 1 (never below 1).
    """
    if method.upper() in WRITE_METHODS:
        return RequestCost(writes=1, units=1)
    path, _, query = url.partition("?")
    segments = [segment for segment in path.split("/") if segment]
    is_list = len(segments) % 2 == 1 and not path.endswith("/$ref")
    units = 2 if is_list else 1
    lowered = unquote(query).lower()  # Graph's nextLinks write `%24select`
    if "$select=" in lowered:
        units -= 1
    if "$expand=" in lowered:
        units += 1
    return RequestCost(writes=0, units=max(1, units))


def total_cost(requests: Iterable[tuple[str, str]]) -> RequestCost:
    cost = RequestCost()
    for method, url in requests:
        cost = cost + request_cost(method, url)
    return cost
