"""Graph's identity and access limits, as the emulator models them.

What Microsoft documents (learn.microsoft.com/graph/throttling-limits, "Identity and access
service limits"; learn.microsoft.com/graph/throttling):

- Throttling is a token bucket over request costs, per application+tenant pair: a resource-unit
  quota (3,500 / 5,000 / 8,000 units per 10 s for tenants under 50 / 50-500 / over 500 users)
  and a write quota (3,000 requests per 2 minutes 30 seconds). Throttled requests still count:
  Graph keeps recording usage while a client is throttled.
- Base costs: every POST/PATCH/PUT/DELETE is 1 unit and 1 write; GETs cost 1 unit except the
  paths in `_BASE_COSTS` (`GET users` 2, `GET groups/{id}/members` 3, ...). `$select` lowers a
  cost by 1, `$expand` raises it by 1, `$top` below 20 lowers it by 1; a cost is never below 1.
  A cost for `me/...` also applies to `users/{id | userPrincipalName}/...`; `$select` on
  `directoryObjects/getByIds` and `getObjectsById` makes them 2. (Creating a user in a B2C
  tenant costs 4 more: the emulator has no B2C tenants.)
- Answers carry `x-ms-resource-unit` (the units used, a positive integer) and, once the
  application used more than 0.8 of a limit, `x-ms-throttle-limit-percentage` (0.8 to 1.8: 1.0
  is the whole limit, 1.2 means about a fifth of the requests are being throttled).
- A 429 carries `Retry-After` (seconds), `x-ms-throttle-scope` as
  `<Scope>/<Limit>/<ApplicationId>/<TenantId>` (Scope `Tenant_Application`; Limit `Read`,
  `Write` or `ReadWrite`) and `x-ms-throttle-information` with the reason
  (`WriteLimitExceeded`, `ResourceUnitLimitExceeded`).

The emulator's choices where the documents say nothing:

- One application in one tenant per distinct bearer token (ids are stable GUIDs derived from the
  token). Every write counts against the write bucket, Teams and calendar writes included.
- An item is admitted only when both buckets it needs hold enough: a write needs 1 write token
  and its units, a read its units. A throttled item takes no tokens but counts in the usage.
- A computed `Retry-After` is the time until the missing tokens are back at the refill rate,
  rounded up to the millisecond (`0.05`, `1`, `2.128`): Graph sends whole seconds and decimals.
- Usage of a limit = what was asked for (admitted and throttled) in the last `windowSeconds`,
  divided by rate x `windowSeconds`; for a write item the higher of its write and unit usage.
  Sent with two decimals, capped at 1.8, on every item above 0.8 (throttled ones too).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
MAX_LIMIT_PERCENTAGE = 1.8
REPORT_ABOVE = 0.8

RESOURCE_UNIT_HEADER = "x-ms-resource-unit"
LIMIT_PERCENTAGE_HEADER = "x-ms-throttle-limit-percentage"
SCOPE_HEADER = "x-ms-throttle-scope"
INFORMATION_HEADER = "x-ms-throttle-information"

_ID = r"[^/]+"
_ME = rf"(?:me|users/{_ID})"

# (method, path pattern relative to the version root, base resource-unit cost); unlisted: 1.
_BASE_COSTS: list[tuple[str, re.Pattern[str], int]] = [
    (method, re.compile(f"^{pattern}$", re.IGNORECASE), cost)
    for method, pattern, cost in [
        ("GET", "applications", 2),
        ("GET", rf"applications/{_ID}/extensionProperties", 2),
        ("GET", "contracts", 3),
        ("POST", "directoryObjects/getByIds", 5),
        ("GET", rf"domains/{_ID}/domainNameReferences", 4),
        ("POST", "getObjectsById", 5),
        ("GET", rf"groups/{_ID}/members", 3),
        ("GET", rf"groups/{_ID}/transitiveMembers", 5),
        ("POST", "isMemberOf", 4),
        ("POST", rf"{_ME}/checkMemberGroups", 4),
        ("POST", rf"{_ME}/checkMemberObjects", 4),
        ("POST", rf"{_ME}/getMemberGroups", 2),
        ("POST", rf"{_ME}/getMemberObjects", 2),
        ("GET", rf"{_ME}/licenseDetails", 2),
        ("GET", rf"{_ME}/memberOf", 2),
        ("GET", rf"{_ME}/ownedObjects", 2),
        ("GET", rf"{_ME}/transitiveMemberOf", 2),
        ("GET", "oauth2PermissionGrants", 2),
        ("GET", rf"oauth2PermissionGrants/{_ID}", 2),
        ("GET", rf"servicePrincipals/{_ID}/appRoleAssignments", 2),
        ("GET", "subscribedSkus", 3),
        ("GET", "users", 2),
    ]
]
_SELECT_FIXED = re.compile(r"^(?:directoryObjects/getByIds|getObjectsById)$", re.IGNORECASE)
_VERSION = re.compile(r"^(?:v1\.0|beta)/", re.IGNORECASE)


def resource_units(method: str, url: str) -> int:
    """The documented resource-unit cost of one identity request (see the module docstring)."""
    method = method.upper()
    raw_path, _, query = url.partition("?")
    path = _VERSION.sub("", unquote(raw_path).strip("/"))
    cost = next((c for m, pattern, c in _BASE_COSTS if m == method and pattern.match(path)), 1)
    options = {key.lower().lstrip("$"): value for key, value in parse_qsl(query, keep_blank_values=True)}
    if "select" in options and _SELECT_FIXED.match(path):
        return 2
    if "select" in options:
        cost -= 1
    if "expand" in options:
        cost += 1
    top = options.get("top", "").strip()
    if top.isdigit() and int(top) < 20:
        cost -= 1
    return max(1, cost)


_SETTING_NAMES = {
    "writesPerSecond": "writes_per_second",
    "writeBurst": "write_burst",
    "unitsPerSecond": "units_per_second",
    "unitBurst": "unit_burst",
    "windowSeconds": "window_seconds",
    "retryAfter": "retry_after",
}


@dataclass(frozen=True)
class LimitSettings:
    """The `limits` control option. Defaults: the documented figures for a small tenant
    (20 writes/s from 3,000 per 150 s; 350 units/s from 3,500 per 10 s)."""

    writes_per_second: float = 20.0
    write_burst: float = 3000.0
    units_per_second: float = 350.0
    unit_burst: float = 3500.0
    window_seconds: float = 10.0
    retry_after: str | None = None  # None: computed from the buckets

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> LimitSettings:
        if not isinstance(spec, dict):
            raise ValueError("limits must be an object or null")
        unknown = set(spec) - set(_SETTING_NAMES)
        if unknown:
            raise ValueError(f"unknown limits keys: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for key, name in _SETTING_NAMES.items():
            if key not in spec:
                continue
            if name == "retry_after":
                values[name] = None if spec[key] is None else str(spec[key])
                continue
            number = float(spec[key])
            if not math.isfinite(number) or number <= 0:
                raise ValueError(f"limits.{key} must be a positive number")
            values[name] = number
        return cls(**values)


class _Bucket:
    """A token bucket: `capacity` tokens at most, refilled at `rate` per second."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def missing(self, cost: float) -> float:
        """Tokens lacking for `cost` (a cost above the capacity only needs a full bucket)."""
        lacking = min(cost, self.capacity) - self.tokens
        return lacking if lacking > 1e-9 else 0.0


class _Usage:
    """What was asked for in the last `window` seconds (admitted and throttled alike)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.events: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def add(self, now: float, amount: float) -> None:
        self.events.append((now, amount))
        self.total += amount

    def current(self, now: float) -> float:
        while self.events and self.events[0][0] <= now - self.window:
            self.total -= self.events.popleft()[1]
        if not self.events:
            self.total = 0.0
        return self.total


@dataclass
class _Caller:
    app_id: str
    tenant_id: str
    writes: _Bucket
    units: _Bucket
    write_usage: _Usage
    unit_usage: _Usage


@dataclass
class Verdict:
    """The limits' answer for one item: admitted or not, and the headers to send with it."""

    admitted: bool
    resource_units: int
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: str | None = None  # a Retry-After spec (`2`, `2,120`, `http-date:3`) when throttled
    limit_percentage: str | None = None


class IdentityLimits:
    """Write and resource-unit buckets per application and tenant. Not thread-safe by itself:
    the emulator calls it under its lock."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._callers: dict[str, _Caller] = {}

    def _caller(self, token: str, now: float) -> _Caller:
        caller = self._callers.get(token)
        if caller is None:
            s = self.settings
            caller = _Caller(
                app_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"graph-emulator:app:{token}")),
                tenant_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"graph-emulator:tenant:{token}")),
                writes=_Bucket(s.write_burst, s.writes_per_second, now),
                units=_Bucket(s.unit_burst, s.units_per_second, now),
                write_usage=_Usage(s.window_seconds),
                unit_usage=_Usage(s.window_seconds),
            )
            self._callers[token] = caller
        return caller

    def charge(self, token: str, method: str, url: str) -> Verdict:
        """Count one request of the caller holding `token`; take its tokens if both buckets can."""
        s = self.settings
        now = self.clock()
        caller = self._caller(token, now)
        is_write = method.upper() in WRITE_METHODS
        units = resource_units(method, url)
        caller.writes.refill(now)
        caller.units.refill(now)

        usage = caller.unit_usage.current(now) + units
        caller.unit_usage.add(now, units)
        share = usage / (s.units_per_second * s.window_seconds)
        if is_write:
            writes = caller.write_usage.current(now) + 1
            caller.write_usage.add(now, 1)
            share = max(share, writes / (s.writes_per_second * s.window_seconds))

        verdict = Verdict(admitted=True, resource_units=units)
        verdict.headers[RESOURCE_UNIT_HEADER] = str(units)
        if share > REPORT_ABOVE:
            verdict.limit_percentage = f"{min(share, MAX_LIMIT_PERCENTAGE):.2f}"
            verdict.headers[LIMIT_PERCENTAGE_HEADER] = verdict.limit_percentage

        write_missing = caller.writes.missing(1) if is_write else 0.0
        unit_missing = caller.units.missing(units)
        if not write_missing and not unit_missing:
            if is_write:
                caller.writes.tokens -= 1
            caller.units.tokens -= units
            return verdict

        verdict.admitted = False
        if write_missing:
            limit, reason = "Write", "WriteLimitExceeded"
        else:
            limit, reason = "ReadWrite", "ResourceUnitLimitExceeded"
        verdict.headers[SCOPE_HEADER] = f"Tenant_Application/{limit}/{caller.app_id}/{caller.tenant_id}"
        verdict.headers[INFORMATION_HEADER] = reason
        if s.retry_after is not None:
            verdict.retry_after = s.retry_after
        else:
            wait = max(write_missing / s.writes_per_second, unit_missing / s.units_per_second)
            verdict.retry_after = format_seconds(wait)
        return verdict


def format_seconds(seconds: float) -> str:
    """Seconds rounded up to the millisecond, at least 0.001, without trailing zeros."""
    millis = max(1, math.ceil(round(seconds * 1000, 6)))
    whole, rest = divmod(millis, 1000)
    return str(whole) if not rest else f"{whole}.{rest:03d}".rstrip("0")
