"""The emulator's HTTP surface: Graph's `$batch` endpoint, single requests, and a control API.

POST /v1.0/$batch            Graph batch rules enforced; items run against the tenant
*    /v1.0/{path}            one request (GET, POST, PATCH, PUT, DELETE) run like one batch item
GET  /_emulator/calls        every call received, oldest first; `?kind=batch` or `?kind=direct`
PUT  /_emulator/config       throttling, identity limits, faults, latency (below); 400 if invalid
POST /_emulator/seed         {"users": N} -> user1..userN@contoso.com; `"profile": true` adds HR
                             attributes and managers (emulator.tenant.seeded_profile)
POST /_emulator/reset        empty tenant, no faults, no limits, no call log
GET  /_emulator/tenant       counts of users, groups, teams; what was created

`PUT /_emulator/config` keys (each optional; those not sent keep their value):

- `throttle`: `{"capacity": N, "refillPerSecond": R}` or null. One bucket for every item,
  whatever its method or caller; an empty bucket answers 429 with `retryAfter` below.
- `retryAfter`: the `Retry-After` of `throttle` 429s: `2`, `1.5`, `2,120`, `http-date:3` (an
  HTTP-date 3 s ahead) or null (no header).
- `limits`: Graph's identity limits per application and tenant (one per bearer token), or null
  (off, also after a reset). All keys optional; defaults are the documented small-tenant figures:
  `{"writesPerSecond": 20, "writeBurst": 3000, "unitsPerSecond": 350, "unitBurst": 3500,
  "windowSeconds": 10, "retryAfter": null}`. Each write item takes a token from the write bucket;
  every item takes its resource units (`emulator.limits.resource_units`) from the unit bucket.
  Items answer `x-ms-resource-unit`, and `x-ms-throttle-limit-percentage` above 0.8 of a limit
  over the last `windowSeconds`; a 429 adds `Retry-After` (computed from the buckets when
  `retryAfter` is null, else that value in the forms above), `x-ms-throttle-scope` and
  `x-ms-throttle-information`. Throttled items are not run. Setting `limits` again starts full
  buckets. Details and sources: `emulator/limits.py`.
- `latencyMs`: added to every `$batch` and single request after the tenant acted.
- `batchFaults`: `[{"status": 503, "retryAfter": "1"}, ...]`, one per `$batch` call in turn
  (single requests never take them).
- `itemFaults`: `[{"urlContains": "...", "method": "PATCH", "status": 429, "times": 2,
  "retryAfter": "0.2"}]`, for batch items and single requests alike.
- `replicationLagSeconds`: how long new users and groups stay invisible.
- `teamOperationSeconds`: how long the operation `POST /teams` answers with (202, `Location`
  `/teams('{id}')/operations('{id}')`, `Content-Location` `/teams('{id}')`) stays `inProgress`
  before it ends `teamOperationOutcome` (`succeeded`, the default, or `failed`); read it at
  `GET /teams/{id}/operations/{id}`. `teamsLocationForm`: how that Location is written:
  `quoted` (as Graph's docs show it), `bare` (`teams(id)`), `absolute` (on graph.microsoft.com)
  or `segments` (`/teams/{id}/operations/{id}`). `teamRequiresOwner`: refuse a team on a
  group without owners (400), as Graph's Teams pages say it does (off by default).
- `faults`: Graph failing at random from a seeded generator (item 503/504s, refused, cut, late,
  unanswered or short `$batch` calls): `emulator/faults.py`, which also serves
  `GET /_emulator/faults` (what was injected) and `GET /_emulator/creates` (objects per natural key).

The call log (`/_emulator/calls`, `GraphEmulator.batch_calls()`, `.direct_calls()`,
`.all_calls()`): `{"at", "kind": "batch" | "direct", "requestId", "status", "retryAfter",
"items": [...]}` (batches add `sequential`); a direct call has exactly one item. Items:
`{"id", "method", "url", "body", "status", "retryAfter"}` plus, when sent, `resourceUnits`,
`limitPercentage` and `throttleScope` (header values as sent). A direct item's `id` is null.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.faults import FaultInjector
from emulator.faults import routes as fault_routes
from emulator.limits import (
    LIMIT_PERCENTAGE_HEADER,
    RESOURCE_UNIT_HEADER,
    SCOPE_HEADER,
    IdentityLimits,
    LimitSettings,
)
from emulator.tenant import Answer, Tenant, error

MAX_BATCH = 20
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}
METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]
_PASSED_HEADERS = ("prefer", "consistencylevel")  # request headers the tenant reads


@dataclass
class TokenBucket:
    """Per-item throttling: each item takes a token; an empty bucket answers 429."""

    capacity: float
    refill_per_second: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill_per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class EmulatorConfig:
    """Behaviour knobs, all off by default. `retry_after` may be `2`, `2.5`, `2,120`,
    `http-date:3` (an HTTP-date 3 s ahead) or null (429 without the header).
    `replicationLagSeconds` (on the tenant): how long new users and groups stay invisible.
    `limits`: Graph's identity limits (see emulator.limits), independent of `throttle`."""

    throttle: TokenBucket | None = None
    limits: IdentityLimits | None = None
    retry_after: str | None = "2"
    latency_ms: int = 0
    batch_faults: list[dict[str, Any]] = field(default_factory=list)
    item_faults: list[dict[str, Any]] = field(default_factory=list)


class GraphEmulator:
    """State shared by the routes; usable in-process (`.app`) or served on loopback."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.tenant = Tenant()
        self.config = EmulatorConfig()
        self.calls: list[dict[str, Any]] = []
        self.clock = clock  # the identity limits' time (tests inject one)
        self._lock = threading.RLock()
        self.faults = FaultInjector()
        self.app = Starlette(
            routes=[
                Route("/v1.0/$batch", self.batch, methods=["POST"]),
                Route("/beta/$batch", self.batch, methods=["POST"]),
                Route("/_emulator/calls", self.get_calls, methods=["GET"]),
                Route("/_emulator/config", self.put_config, methods=["PUT"]),
                Route("/_emulator/seed", self.seed, methods=["POST"]),
                Route("/_emulator/reset", self.reset_route, methods=["POST"]),
                Route("/_emulator/tenant", self.get_tenant, methods=["GET"]),
                # After the $batch routes, which win for `POST /v1.0/$batch`.
                *fault_routes(self),
                Route("/v1.0/{path:path}", self.direct, methods=METHODS),
                Route("/beta/{path:path}", self.direct, methods=METHODS),
            ]
        )

    # --- control -----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.tenant = Tenant()
            self.config = EmulatorConfig()
            self.calls = []
        self.faults.reset()

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply control options (see the module docstring); ValueError when `limits` is invalid."""
        limits: LimitSettings | None = None
        if settings.get("limits") is not None:
            limits = LimitSettings.from_json(settings["limits"])
        with self._lock:
            if "limits" in settings:
                self.config.limits = IdentityLimits(limits, self.clock) if limits is not None else None
            if "throttle" in settings:
                spec = settings["throttle"]
                self.config.throttle = (
                    TokenBucket(float(spec["capacity"]), float(spec.get("refillPerSecond", 0)))
                    if spec
                    else None
                )
            if "retryAfter" in settings:
                self.config.retry_after = settings["retryAfter"]
            if "replicationLagSeconds" in settings:
                self.tenant.lag_seconds = float(settings["replicationLagSeconds"])
            if "teamOperationSeconds" in settings:
                self.tenant.team_operation_seconds = float(settings["teamOperationSeconds"])
            if "teamOperationOutcome" in settings:
                outcome = str(settings["teamOperationOutcome"])
                if outcome not in {"succeeded", "failed"}:
                    raise ValueError("teamOperationOutcome must be succeeded or failed")
                self.tenant.team_outcome = outcome
            if "teamRequiresOwner" in settings:
                self.tenant.team_requires_owner = bool(settings["teamRequiresOwner"])
            if "teamsLocationForm" in settings:
                form = str(settings["teamsLocationForm"])
                if form not in {"quoted", "bare", "absolute", "segments"}:
                    raise ValueError("teamsLocationForm must be quoted, bare, absolute or segments")
                self.tenant.location_form = form
            if "latencyMs" in settings:
                self.config.latency_ms = int(settings["latencyMs"])
            if "batchFaults" in settings:
                self.config.batch_faults = list(settings["batchFaults"])
            if "faults" in settings:
                self.faults.configure(settings["faults"])
            if "itemFaults" in settings:
                self.config.item_faults = [dict(f) for f in settings["itemFaults"]]

    def all_calls(self) -> list[dict[str, Any]]:
        """Every call received, `$batch` and direct, oldest first."""
        with self._lock:
            return list(self.calls)

    def batch_calls(self) -> list[dict[str, Any]]:
        """The `$batch` calls received (direct requests left out)."""
        return [call for call in self.all_calls() if call["kind"] == "batch"]

    def direct_calls(self) -> list[dict[str, Any]]:
        """The single (non-batch) requests received."""
        return [call for call in self.all_calls() if call["kind"] == "direct"]

    async def get_calls(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        calls = self.all_calls()
        if kind:
            calls = [call for call in calls if call["kind"] == kind]
        return JSONResponse({"calls": calls})

    async def put_config(self, request: Request) -> Response:
        try:
            self.configure(await request.json())
        except (ValueError, TypeError, KeyError, AttributeError) as problem:
            return JSONResponse(_bad(f"Invalid emulator config: {problem}"), status_code=400)
        return Response(status_code=204)

    async def seed(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            upns = self.tenant.seed_users(int(body.get("users", 0)), profile=bool(body.get("profile")))
        return JSONResponse({"users": upns})

    async def reset_route(self, _: Request) -> Response:
        self.reset()
        return Response(status_code=204)

    async def get_tenant(self, _: Request) -> Response:
        with self._lock:
            t = self.tenant
            return JSONResponse(
                {
                    "users": len(t.users),
                    "groups": len(t.groups),
                    "teams": len(t.teams),
                    "created": [list(c) for c in t.created],
                }
            )

    # --- $batch --------------------------------------------------------------------------

    async def batch(self, request: Request) -> Response:
        record, headers = _start_call("batch", request)
        token = _bearer(request)
        if token is None:
            return self._finish(
                record,
                401,
                {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}},
                headers,
            )
        with self._lock:
            if self.config.batch_faults:
                fault = self.config.batch_faults.pop(0)
                fault_headers = dict(headers)
                if fault.get("retryAfter") is not None:
                    fault_headers["Retry-After"] = self._retry_after_value(str(fault["retryAfter"]))
                return self._finish(
                    record,
                    int(fault["status"]),
                    {"error": {"code": "injectedFault", "message": "Injected by the emulator"}},
                    fault_headers,
                )
        try:
            payload = await request.json()
        except ValueError:
            return self._finish(record, 400, _bad("Invalid JSON body"), headers)
        problem = _check_batch(payload)
        if problem:
            return self._finish(record, 400, _bad(problem), headers)
        items: list[dict[str, Any]] = payload["requests"]
        sequential = any(item.get("dependsOn") for item in items)
        record["sequential"] = sequential
        finish = functools.partial(self._finish, record, headers=headers)
        fate = self.faults.draw()
        if (refused := await fate.before_acting(request, record, items, finish)) is not None:
            return refused
        responses = []
        failed: set[str] = set()
        with self._lock:
            self.tenant.base_url = _version_root(request)
            for item in items:
                deps = item.get("dependsOn") or []
                if any(dep in failed for dep in deps):
                    answer = error(424, "FailedDependency", "Dependent request failed.")
                else:
                    run = functools.partial(self._checked_item, item, token)
                    answer = fate.item(item, run)
                if not 200 <= answer.status < 300:
                    failed.add(item["id"])
                record["items"].append(_item_record(item, answer))
                entry: dict[str, Any] = {"id": item["id"], "status": answer.status, "headers": answer.headers}
                entry["body"] = answer.body
                responses.append(entry)
        responses.reverse()  # Graph answers in any order; so does the emulator
        if self.config.latency_ms:  # the tenant has acted; the answer is slow (a caller may die waiting)
            await asyncio.sleep(self.config.latency_ms / 1000)
        return await fate.answer(request, record, responses, finish)

    # --- single requests ------------------------------------------------------------------

    async def direct(self, request: Request) -> Response:
        """One request outside a batch, run like one batch item (faults, throttling, limits)."""
        record, headers = _start_call("direct", request)
        query = request.url.query
        item: dict[str, Any] = {
            "id": None,
            "method": request.method,
            "url": "/" + request.path_params["path"] + (f"?{query}" if query else ""),
            "body": None,
            "headers": {k: v for k, v in request.headers.items() if k.lower() in _PASSED_HEADERS},
        }
        answer = await self._direct_answer(request, item)
        record["items"].append(_item_record(item, answer))
        if self.config.latency_ms and answer.status != 401:
            await asyncio.sleep(self.config.latency_ms / 1000)
        answer_headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
        return self._finish(record, answer.status, answer.body, {**answer_headers, **headers})

    async def _direct_answer(self, request: Request, item: dict[str, Any]) -> Answer:
        token = _bearer(request)
        if token is None:
            return error(401, "InvalidAuthenticationToken", "Access token is empty.")
        raw = await request.body()
        if raw.strip():
            try:
                item["body"] = json.loads(raw)
            except ValueError:
                return error(400, "BadRequest", "Invalid JSON body")
        with self._lock:
            self.tenant.base_url = _version_root(request)
            return self._run_item(item, token)

    # --- one item --------------------------------------------------------------------------

    def _checked_item(self, item: dict[str, Any], token: str) -> Answer:
        return self._check_write(item) or self._run_item(item, token)

    @staticmethod
    def _check_write(item: dict[str, Any]) -> Answer | None:
        """A batch rule: a write item needs a body and a Content-Type header."""
        if item["method"].upper() not in WRITE_METHODS:
            return None
        headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
        if "body" not in item or "content-type" not in headers:
            return error(
                400,
                "BadRequest",
                f"Write request id : {item['id']} does not contain Content-Type header or body.",
            )
        return None

    def _run_item(self, item: dict[str, Any], token: str) -> Answer:
        """Faults, then the `throttle` bucket, then the identity limits, then the tenant.
        Called under the lock."""
        method = item["method"].upper()
        url = "/" + item["url"].lstrip("/")
        for fault in self.config.item_faults:
            if (
                fault.get("times", 1) > 0
                and fault.get("urlContains", "") in url
                and fault.get("method", method) == method
            ):
                fault["times"] = fault.get("times", 1) - 1
                answer = error(int(fault["status"]), "injectedFault", "Injected by the emulator")
                if fault.get("retryAfter") is not None:
                    answer.headers["Retry-After"] = self._retry_after_value(str(fault["retryAfter"]))
                return answer
        if self.config.throttle is not None and not self.config.throttle.take():
            answer = error(429, "TooManyRequests", "Too many requests.")
            if self.config.retry_after is not None:
                answer.headers["Retry-After"] = self._retry_after_value(self.config.retry_after)
            return answer
        limit_headers: dict[str, str] = {}
        if self.config.limits is not None:
            verdict = self.config.limits.charge(token, method, url)
            if not verdict.admitted:
                answer = error(429, "TooManyRequests", "Please retry again later.")
                answer.headers.update(verdict.headers)
                if verdict.retry_after is not None:
                    answer.headers["Retry-After"] = self._retry_after_value(verdict.retry_after)
                return answer
            limit_headers = verdict.headers
        answer = self.tenant.handle(method, url, item.get("body"), item.get("headers"))
        answer.headers.update(limit_headers)
        if answer.status < 300 and answer.body is not None:
            answer.headers.setdefault("Content-Type", "application/json")
        return answer

    @staticmethod
    def _retry_after_value(spec: str) -> str:
        if spec.startswith("http-date:"):
            return formatdate(time.time() + float(spec.split(":", 1)[1]), usegmt=True)
        return spec

    def _finish(self, record: dict[str, Any], status: int, body: Any, headers: dict[str, str]) -> Response:
        record["status"] = status
        record["retryAfter"] = headers.get("Retry-After")
        with self._lock:
            self.calls.append(record)
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)


def _version_root(request: Request) -> str:
    """The version root the caller used (`http://127.0.0.1:7072/v1.0`), for `@odata.nextLink`."""
    version = "beta" if request.url.path.startswith("/beta/") else "v1.0"
    return f"{request.url.scheme}://{request.url.netloc}/{version}"


def _bearer(request: Request) -> str | None:
    """The bearer token (each distinct token is one application in one tenant), or None."""
    authorization = request.headers.get("authorization", "")
    return authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None


def _item_record(item: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """One item in the call log, with the throttle headers it was answered with."""
    record: dict[str, Any] = {
        "id": item["id"],
        "method": item["method"],
        "url": item["url"],
        "body": item.get("body"),
        "status": answer.status,
        "retryAfter": answer.headers.get("Retry-After"),
    }
    for key, name in (
        ("resourceUnits", RESOURCE_UNIT_HEADER),
        ("limitPercentage", LIMIT_PERCENTAGE_HEADER),
        ("throttleScope", SCOPE_HEADER),
    ):
        if name in answer.headers:
            record[key] = answer.headers[name]
    return record


def _start_call(kind: str, request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    """The call-log record of a call just received, and the id headers every answer carries."""
    request_id = str(uuid.uuid4())
    record: dict[str, Any] = {"at": time.time(), "kind": kind, "requestId": request_id, "items": []}
    headers = {"request-id": request_id, "client-request-id": request.headers.get("client-request-id", "")}
    return record, headers


def _bad(message: str) -> dict[str, Any]:
    return {"error": {"code": "BadRequest", "message": message}}


def _check_batch(payload: Any) -> str | None:
    """Graph's whole-batch rules; a broken batch is one 400, not per-item errors."""
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        return "Body must be an object with a 'requests' array."
    items = payload["requests"]
    if not items:
        return "Batch must contain at least one request."
    if len(items) > MAX_BATCH:
        return f"Number of batch requests must not exceed {MAX_BATCH}."
    seen: list[str] = []
    for _index, item in enumerate(items):
        if not isinstance(item, dict):
            return "Each request must be an object."
        if not isinstance(item.get("id"), str) or not item["id"]:
            return "Invalid request id: ids must be non-empty strings."
        if item["id"].lower() in seen:
            return f"Duplicate request id: {item['id']}."
        if not isinstance(item.get("method"), str) or item["method"].upper() not in {
            "GET",
            "POST",
            "PATCH",
            "PUT",
            "DELETE",
        }:
            return f"Invalid method for request {item['id']}."
        url = item.get("url")
        if not isinstance(url, str) or "://" in url or url.startswith("//"):
            return f"Invalid url for request {item['id']}: must be relative."
        deps = item.get("dependsOn") or []
        if not isinstance(deps, list) or any(not isinstance(d, str) or d.lower() not in seen for d in deps):
            return "Invalid dependency: dependsOn must name earlier requests in the batch."
        seen.append(item["id"].lower())
    with_deps = [bool(item.get("dependsOn")) for item in items]
    if any(with_deps):
        chain = all(items[i].get("dependsOn") == [items[i - 1]["id"]] for i in range(1, len(items)))
        if with_deps[0] or not chain:
            return "Batch should be either fully sequential or fully parallel."
    return None
