"""What Graph holds now for the users of a bulk file: read through the fleet's read budget.

Two ways, by cost (learn.microsoft.com/graph/throttling-limits, identity and access): a list
of users costs 2 resource units, `$select` takes one off and `$expand` adds one; reads cost no
write quota.

- **Lookups**: `GET /users?$filter=userPrincipalName in (...)` (or `id in (...)`), 15 users a
  request (Graph's limit for `in`), 20 requests a `$batch`, several at once: 1 unit per 15
  users, 2 with the manager expanded.
- **Scan**: `GET /users?$select=...&$top=999` and every `@odata.nextLink` after it, followed as
  Graph wrote it: 1 unit per page of up to 999 users; with `$expand=manager` Graph pages at
  most 100 users for 2 units. One chain of calls, each waiting for the one before.

`choose` takes the one that costs fewer units, from the tenant's user count (one
`$count` read, 1 unit). Every read is a `$batch` item paced by the shared budget
(`BatchCoalescer.send_now`) and passes the allow-list; a 429 is waited out for as long as Graph
asks and the same request (the same nextLink) is sent again; no answer or a 5xx is tried again
with backoff; anything else, or too many failures, raises `ReadFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

from pydantic import JsonValue

from batching.allowlist import GRAPH_HOSTS, sendable_problems, url_as_sent
from batching.coalescer import BatchCoalescer
from batching.graph.client import BatchRequestItem, ItemResponse
from batching.graph.throttling import Priority, RequestCost, parse_retry_after, request_cost

log = logging.getLogger(__name__)

IN_FILTER_VALUES: Final = 15  # Graph's limit on the values of one `in` filter
BATCH_SIZE: Final = 20
PAGE_SIZE: Final = 999
EXPANDED_PAGE_SIZE: Final = 100  # Graph pages directory objects at 100 when expanding
MANAGER_EXPAND: Final = "manager($select=id,userPrincipalName)"
RESERVED_PAGES: Final = 10  # a scan's read budget is taken this many pages at a time
_MAX_ATTEMPTS: Final = 6
_MAX_THROTTLED_SECONDS: Final = 900.0


class ReadFailed(Exception):
    """The current values could not be read; nothing was decided from a partial read."""


class Strategy(StrEnum):
    LOOKUP = "lookup"
    SCAN = "scan"


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """A user as Graph returned it: the selected properties, and the manager when expanded."""

    id: str
    user_principal_name: str
    values: Mapping[str, JsonValue]
    manager_id: str | None = None
    manager_upn: str | None = None

    @property
    def keys(self) -> tuple[str, str]:
        return self.id.lower(), self.user_principal_name.lower()


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """How a file's users are read, and what it costs in resource units."""

    strategy: Strategy
    select: tuple[str, ...]
    manager: bool
    tenant_users: int | None
    units: int

    def describe(self) -> str:
        tenant = (
            f"{self.tenant_users:,} users in the tenant"
            if self.tenant_users is not None
            else "tenant size unknown"
        )
        return f"{self.strategy.value} (about {self.units:,} resource units; {tenant})"


def lookup_units(rows: int, *, manager: bool) -> int:
    return math.ceil(rows / IN_FILTER_VALUES) * (2 if manager else 1)


def scan_units(tenant_users: int, *, manager: bool) -> int:
    pages = max(1, math.ceil(tenant_users / (EXPANDED_PAGE_SIZE if manager else PAGE_SIZE)))
    return pages * (2 if manager else 1)


def choose(rows: int, tenant_users: int | None, *, manager: bool, select: Sequence[str]) -> ReadPlan:
    """The cheaper way in resource units; lookups when the tenant's size is unknown."""
    by_lookup = lookup_units(rows, manager=manager)
    if tenant_users is not None and scan_units(tenant_users, manager=manager) < by_lookup:
        units = scan_units(tenant_users, manager=manager)
        return ReadPlan(Strategy.SCAN, tuple(select), manager, tenant_users, units)
    return ReadPlan(Strategy.LOOKUP, tuple(select), manager, tenant_users, by_lookup)


@dataclass(slots=True)
class _Pending:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    throttled_since: float | None = None


class UserDirectory:
    """Reads users for bulk files, at Graph's pace (bulk priority: low)."""

    def __init__(
        self,
        coalescer: BatchCoalescer,
        graph_base_url: str,
        *,
        graph_hosts: frozenset[str] = GRAPH_HOSTS,
        backoff_seconds: float = 1.0,
    ) -> None:
        self._coalescer = coalescer
        self._base = graph_base_url.rstrip("/")
        self._graph_hosts = graph_hosts
        self._backoff = backoff_seconds
        self.reads = 0  # requests answered (each a $batch item)

    async def count(self) -> int | None:
        """The tenant's user count (an advanced query: eventually consistent, which is enough
        to choose how to read); None when Graph does not say."""
        try:
            body = (
                await self._get_all(
                    {
                        "count": _Pending(
                            "/users?$count=true&$top=1&$select=id", {"ConsistencyLevel": "eventual"}
                        )
                    }
                )
            )["count"]
        except ReadFailed as error:
            log.warning("could not count the tenant's users (%s); reading by lookups", error)
            return None
        count = body.get("@odata.count") if isinstance(body, dict) else None
        return count if isinstance(count, int) and count >= 0 else None

    async def lookup(
        self, keys: Iterable[tuple[str, str]], select: Sequence[str], *, manager: bool
    ) -> dict[str, CurrentUser]:
        """Users by key, `(key_column, value)` pairs, 15 to a request; found users under both
        their lower-case id and UPN."""
        by_column: dict[str, list[str]] = {}
        for column, value in keys:
            by_column.setdefault(column, []).append(value)
        requests: dict[str, _Pending] = {}
        for column, values in by_column.items():
            unique = list(dict.fromkeys(values))
            for start in range(0, len(unique), IN_FILTER_VALUES):
                chunk = unique[start : start + IN_FILTER_VALUES]
                listed = ",".join(_literal(value) for value in chunk)
                url = f"/users?$filter={column} in ({listed})&{_options(select, manager)}"
                requests[f"{column}-{start}"] = _Pending(url)
        found: dict[str, CurrentUser] = {}
        for body in (await self._get_all(requests)).values():
            for user in _users(body):
                for key in user.keys:
                    found[key] = user
                # A lookup answers at most 15 users: a nextLink here would mean more matched.
        return found

    async def scan(self, select: Sequence[str], *, manager: bool) -> AsyncIterator[list[CurrentUser]]:
        """Every user of the tenant, a page at a time, following each nextLink as written.

        Each page waits for the one before, so the read budget is reserved `RESERVED_PAGES`
        pages ahead (while pages are fetched) instead of once per page."""
        first = f"/users?{_options(select, manager)}&$top={PAGE_SIZE}"
        reservations = _Reservations(self._coalescer, request_cost("GET", url_as_sent(first)))
        url: str | None = first
        pages = 0
        try:
            while url is not None:
                body = (await self._get_all({"page": _Pending(url)}, reservations))["page"]
                pages += 1
                yield list(_users(body))
                link = body.get("@odata.nextLink") if isinstance(body, dict) else None
                url = self._relative(link) if isinstance(link, str) else None
        finally:
            await reservations.close()
        log.info("bulk: read the tenant's users in %d pages", pages)

    def _relative(self, link: str) -> str:
        """A nextLink as a `$batch` item URL: Graph's own version root taken off, the rest
        (its path and query, which the client must not rewrite) kept as written."""
        for root in (self._base, *(f"https://{host}/v1.0" for host in self._graph_hosts)):
            if link.lower().startswith(root.lower() + "/"):
                return link[len(root) :]
        raise ReadFailed("Graph's next page link points outside the Graph endpoint the app uses")

    async def _get_all(
        self, requests: Mapping[str, _Pending], reservations: _Reservations | None = None
    ) -> dict[str, Any]:
        """Each request's 200 body; retried while Graph throttles or fails, then ReadFailed."""
        for pending in requests.values():
            problems = sendable_problems("GET", url_as_sent(pending.url), pending.headers, None)
            if problems:
                raise ReadFailed("a read the app would make is not allowed: " + "; ".join(problems))
        waiting = dict(requests)
        bodies: dict[str, Any] = {}
        while waiting:
            keys = list(waiting)
            chunks = [keys[start : start + BATCH_SIZE] for start in range(0, len(keys), BATCH_SIZE)]
            answered = await asyncio.gather(*(self._send(chunk, waiting, reservations) for chunk in chunks))
            delay = 0.0
            for answers in answered:
                for key, answer in answers.items():
                    self.reads += 1
                    pending = waiting[key]
                    if 200 <= answer.status < 300:
                        bodies[key] = answer.body
                        del waiting[key]
                        continue
                    delay = max(delay, self._retry_delay(pending, answer))
            if waiting:
                await asyncio.sleep(delay)
        return bodies

    async def _send(
        self, keys: Sequence[str], waiting: Mapping[str, _Pending], reservations: _Reservations | None
    ) -> dict[str, ItemResponse]:
        items = [
            BatchRequestItem(key, "GET", url_as_sent(waiting[key].url), waiting[key].headers) for key in keys
        ]
        if reservations is None:
            return await self._coalescer.send_now(items, priority=Priority.LOW)
        await reservations.take()
        return await self._coalescer.send_now(items, priority=Priority.LOW, reserved=True)

    def _retry_delay(self, pending: _Pending, answer: ItemResponse) -> float:
        """How long to wait before sending it again; ReadFailed when it must not be."""
        now = time.monotonic()
        if answer.status == 429:  # bounded by time, never by attempts
            pending.throttled_since = pending.throttled_since or now
            if now - pending.throttled_since > _MAX_THROTTLED_SECONDS:
                raise ReadFailed(f"Graph kept throttling reads for {now - pending.throttled_since:.0f} s")
            return parse_retry_after(answer.retry_after) or self._backoff
        pending.attempts += 1
        if answer.status != 0 and answer.status < 500:
            raise ReadFailed(f"Graph answered a read with {answer.status} {answer.error_code or ''}".rstrip())
        if pending.attempts >= _MAX_ATTEMPTS:
            raise ReadFailed(f"no clear answer from Graph after {pending.attempts} reads ({answer.status})")
        retry_after = parse_retry_after(answer.retry_after)
        if retry_after is not None:
            return retry_after
        return random.uniform(0, min(30.0, self._backoff * 2**pending.attempts))


class _Reservations:
    """The read budget for a chain of single-call reads, taken `RESERVED_PAGES` calls at a
    time, the next block while the current one is used. At most one block is left unused when
    the chain ends (a few resource units, never more than the budget)."""

    def __init__(self, coalescer: BatchCoalescer, cost: RequestCost) -> None:
        self._coalescer = coalescer
        self._block = RequestCost(cost.writes * RESERVED_PAGES, cost.units * RESERVED_PAGES)
        self._left = 0
        self._next: asyncio.Task[None] = asyncio.create_task(coalescer.reserve(self._block))

    async def take(self) -> None:
        if self._left == 0:
            await self._next
            self._left = RESERVED_PAGES
            self._next = asyncio.create_task(self._coalescer.reserve(self._block))
        self._left -= 1

    async def close(self) -> None:
        self._next.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._next


def _options(select: Sequence[str], manager: bool) -> str:
    options = f"$select={','.join(select)}"
    return f"{options}&$expand={MANAGER_EXPAND}" if manager else options


def _literal(value: str) -> str:
    """An OData string literal, percent-encoded so no character of it can end the option."""
    return "'" + quote(value.replace("'", "''"), safe="@'._-~!^") + "'"


def _users(body: Any) -> Iterable[CurrentUser]:
    """The users of a list answer; property names matched without regard to case."""
    listed = body.get("value") if isinstance(body, dict) else None
    for raw in listed if isinstance(listed, list) else []:
        if not isinstance(raw, dict):
            continue
        user = {str(name).lower(): value for name, value in raw.items()}
        user_id, upn = user.get("id"), user.get("userprincipalname")
        if not isinstance(user_id, str) or not isinstance(upn, str):
            continue
        manager = user.get("manager")
        manager_id = manager_upn = None
        if isinstance(manager, dict):
            lowered = {str(name).lower(): value for name, value in manager.items()}
            found_id, found_upn = lowered.get("id"), lowered.get("userprincipalname")
            manager_id = found_id if isinstance(found_id, str) else None
            manager_upn = found_upn if isinstance(found_upn, str) else None
        yield CurrentUser(user_id, upn, user, manager_id, manager_upn)
