"""The emulator's HTTP surface: Graph's `$batch` endpoint plus a small control API.

POST /v1.0/$batch            Graph batch rules enforced; items run against the tenant
GET  /_emulator/calls        every $batch call received (for tests and curious humans)
PUT  /_emulator/config       throttling, faults, latency (see EmulatorConfig)
POST /_emulator/seed         {"users": N} -> user1..userN@contoso.com
POST /_emulator/reset        empty tenant, no faults, no call log
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.tenant import Answer, Tenant, error

MAX_BATCH = 20
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


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
    `replicationLagSeconds` (on the tenant): how long new users and groups stay invisible."""

    throttle: TokenBucket | None = None
    retry_after: str | None = "2"
    latency_ms: int = 0
    batch_faults: list[dict[str, Any]] = field(default_factory=list)
    item_faults: list[dict[str, Any]] = field(default_factory=list)


class GraphEmulator:
    """State shared by the routes; usable in-process (`.app`) or served on loopback."""

    def __init__(self) -> None:
        self.tenant = Tenant()
        self.config = EmulatorConfig()
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/v1.0/$batch", self.batch, methods=["POST"]),
                Route("/beta/$batch", self.batch, methods=["POST"]),
                Route("/_emulator/calls", self.get_calls, methods=["GET"]),
                Route("/_emulator/config", self.put_config, methods=["PUT"]),
                Route("/_emulator/seed", self.seed, methods=["POST"]),
                Route("/_emulator/reset", self.reset_route, methods=["POST"]),
                Route("/_emulator/tenant", self.get_tenant, methods=["GET"]),
            ]
        )

    # --- control -----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.tenant = Tenant()
            self.config = EmulatorConfig()
            self.calls = []

    def configure(self, settings: dict[str, Any]) -> None:
        with self._lock:
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
            if "latencyMs" in settings:
                self.config.latency_ms = int(settings["latencyMs"])
            if "batchFaults" in settings:
                self.config.batch_faults = list(settings["batchFaults"])
            if "itemFaults" in settings:
                self.config.item_faults = [dict(f) for f in settings["itemFaults"]]

    def batch_calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.calls)

    async def get_calls(self, _: Request) -> Response:
        return JSONResponse({"calls": self.batch_calls()})

    async def put_config(self, request: Request) -> Response:
        self.configure(await request.json())
        return Response(status_code=204)

    async def seed(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            upns = self.tenant.seed_users(int(body.get("users", 0)))
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
        request_id = str(uuid.uuid4())
        record: dict[str, Any] = {"at": time.time(), "requestId": request_id, "items": []}
        headers = {
            "request-id": request_id,
            "client-request-id": request.headers.get("client-request-id", ""),
        }
        if not request.headers.get("authorization", "").startswith("Bearer "):
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
        responses = []
        failed: set[str] = set()
        with self._lock:
            for item in items:
                deps = item.get("dependsOn") or []
                if any(dep in failed for dep in deps):
                    answer = error(424, "FailedDependency", "Dependent request failed.")
                else:
                    answer = self._run_item(item)
                if not 200 <= answer.status < 300:
                    failed.add(item["id"])
                record["items"].append(
                    {
                        "id": item["id"],
                        "method": item["method"],
                        "url": item["url"],
                        "body": item.get("body"),
                        "status": answer.status,
                        "retryAfter": answer.headers.get("Retry-After"),
                    }
                )
                entry: dict[str, Any] = {"id": item["id"], "status": answer.status, "headers": answer.headers}
                entry["body"] = answer.body
                responses.append(entry)
        responses.reverse()  # Graph answers in any order; so does the emulator
        if self.config.latency_ms:  # the tenant has acted; the answer is slow (a caller may die waiting)
            await asyncio.sleep(self.config.latency_ms / 1000)
        return self._finish(record, 200, {"responses": responses}, headers)

    def _run_item(self, item: dict[str, Any]) -> Answer:
        method = item["method"].upper()
        url = "/" + item["url"].lstrip("/")
        if method in WRITE_METHODS:
            headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
            if "body" not in item or "content-type" not in headers:
                return error(
                    400,
                    "BadRequest",
                    f"Write request id : {item['id']} does not contain Content-Type header or body.",
                )
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
        answer = self.tenant.handle(method, url, item.get("body"))
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
        return JSONResponse(body, status_code=status, headers=headers)


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
