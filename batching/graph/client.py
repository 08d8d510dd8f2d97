"""The Graph `$batch` client: one call per batch, responses matched by id, no retries here.

Batch item ids are the client's own ("1".."20"), so operations from different jobs with the
same id can share a batch; callers get answers back by their own keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from batching.graph.throttling import NO_ANSWER, PRIORITY_HEADER, Priority, header


@dataclass(frozen=True, slots=True)
class BatchRequestItem:
    key: str
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True, slots=True)
class ItemResponse:
    status: int
    headers: Mapping[str, str]
    body: Any
    request_id: str | None

    @property
    def retry_after(self) -> str | None:
        return header(self.headers, "Retry-After")

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else None

    @property
    def error_message(self) -> str | None:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return message if isinstance(message, str) else None


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """The whole call's answer; `items` is empty unless the batch itself was accepted (200)."""

    status: int
    client_request_id: str
    request_id: str | None
    headers: Mapping[str, str]
    items: Mapping[str, ItemResponse]
    error: str | None = None

    @property
    def retry_after(self) -> str | None:
        return header(self.headers, "Retry-After")


class GraphBatchClient:
    """Posts `$batch` calls through an httpx client that carries auth, timeouts and transport."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def send(
        self, items: Sequence[BatchRequestItem], *, priority: Priority | None = None
    ) -> BatchResponse:
        """One `$batch` call; `priority` is sent as `x-ms-throttle-priority`."""
        wire_ids = {str(index): item.key for index, item in enumerate(items, start=1)}
        requests = []
        for wire_id, item in zip(wire_ids, items, strict=False):
            entry: dict[str, Any] = {"id": wire_id, "method": item.method, "url": item.url}
            if item.headers:
                entry["headers"] = dict(item.headers)
            if item.body is not None:
                entry["body"] = item.body
            requests.append(entry)

        client_request_id = str(uuid.uuid4())
        headers = {"client-request-id": client_request_id, "Accept": "application/json"}
        if priority is not None:
            headers[PRIORITY_HEADER] = priority.header_value
        try:
            response = await self._http.post("$batch", json={"requests": requests}, headers=headers)
        except httpx.TransportError as error:
            return BatchResponse(
                NO_ANSWER, client_request_id, None, {}, {}, f"no answer from Graph: {error!r}"
            )

        request_id = response.headers.get("request-id")
        if response.status_code != 200:
            return BatchResponse(
                response.status_code,
                client_request_id,
                request_id,
                dict(response.headers),
                {},
                _error_text(response),
            )
        return BatchResponse(
            200,
            client_request_id,
            request_id,
            dict(response.headers),
            _match_items(response, wire_ids, request_id),
        )


def build_http_client(
    base_url: httpx.URL,
    auth: httpx.Auth,
    *,
    timeout_seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The httpx client for Graph: base URL, token policy, timeouts, redirects never followed."""
    root = str(base_url).rstrip("/") + "/"
    return httpx.AsyncClient(
        base_url=root,
        auth=auth,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
        transport=transport,
        headers={"User-Agent": "graph-provisioning-processor/1.0"},
    )


def _match_items(
    response: httpx.Response, wire_ids: Mapping[str, str], batch_request_id: str | None
) -> dict[str, ItemResponse]:
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    answers = payload.get("responses") if isinstance(payload, dict) else None
    matched: dict[str, ItemResponse] = {}
    for answer in answers if isinstance(answers, list) else []:
        if not isinstance(answer, dict) or str(answer.get("id")) not in wire_ids:
            continue
        raw_headers = answer.get("headers")
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        body = answer.get("body")
        matched[wire_ids[str(answer["id"])]] = ItemResponse(
            status=int(answer.get("status", NO_ANSWER)),
            headers=headers,
            body=body,
            request_id=_item_request_id(headers, body) or batch_request_id,
        )
    for key in wire_ids.values():
        matched.setdefault(
            key,
            ItemResponse(
                NO_ANSWER,
                {},
                {"error": {"code": "noResponse", "message": "Graph returned no answer for this item"}},
                batch_request_id,
            ),
        )
    return matched


def _item_request_id(headers: Mapping[str, str], body: Any) -> str | None:
    found = header(headers, "request-id")
    if found:
        return found
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("innerError") if isinstance(error, dict) else None
    value = inner.get("request-id") if isinstance(inner, dict) else None
    return value if isinstance(value, str) else None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code, message = error.get("code"), error.get("message")
        if code or message:
            return f"{code}: {message}"
    except ValueError:
        pass
    return f"HTTP {response.status_code} from Graph $batch"
