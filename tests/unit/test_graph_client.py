"""The $batch client and the token policy, over httpx.MockTransport (no network)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from batching.graph.auth import EmulatorCredential, GraphTokenAuth, UnsafeGraphEndpoint, check_graph_endpoint
from batching.graph.client import BatchRequestItem, GraphBatchClient, build_http_client

GRAPH = httpx.URL("https://graph.microsoft.com/v1.0")


class CountingCredential:
    def __init__(self, lifetime: int = 3600) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.lifetime = lifetime

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"token-{len(self.calls)}", int(time.time()) + self.lifetime)

    async def close(self) -> None:
        return None


def _client(handler: Any, credential: Any = None) -> GraphBatchClient:
    auth = GraphTokenAuth(credential or CountingCredential(), GRAPH)
    return GraphBatchClient(
        build_http_client(GRAPH, auth, timeout_seconds=5, transport=httpx.MockTransport(handler))
    )


ITEMS = [
    BatchRequestItem("job\na", "GET", "/users/a"),
    BatchRequestItem("job\nb", "PATCH", "/users/b", {"Content-Type": "application/json"}, {"x": 1}),
]


async def test_answers_in_any_order_are_matched_back_by_id() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        seen["headers"] = request.headers
        return httpx.Response(
            200,
            headers={"request-id": "batch-rid"},
            json={
                "responses": [
                    {
                        "id": "2",
                        "status": 404,
                        "body": {
                            "error": {
                                "code": "Request_ResourceNotFound",
                                "message": "gone",
                                "innerError": {"request-id": "item-rid"},
                            }
                        },
                    },
                    {"id": "1", "status": 200, "headers": {"Retry-After": "3"}, "body": {"id": "a"}},
                ]
            },
        )

    response = await _client(handler).send(ITEMS)

    assert seen["url"] == "https://graph.microsoft.com/v1.0/$batch"
    assert [r["id"] for r in seen["body"]["requests"]] == ["1", "2"]
    assert seen["body"]["requests"][1]["body"] == {"x": 1}
    assert "body" not in seen["body"]["requests"][0]
    assert seen["headers"]["client-request-id"] == response.client_request_id
    assert seen["headers"]["authorization"] == "Bearer token-1"
    assert response.items["job\na"].status == 200
    assert response.items["job\na"].request_id == "batch-rid"
    assert response.items["job\na"].retry_after == "3"
    assert response.items["job\nb"].status == 404
    assert response.items["job\nb"].request_id == "item-rid"
    assert response.items["job\nb"].error_code == "Request_ResourceNotFound"


async def test_item_missing_from_the_answer_counts_as_no_answer() -> None:
    response = await _client(lambda r: httpx.Response(200, json={"responses": []})).send(ITEMS)
    assert {item.status for item in response.items.values()} == {0}


async def test_whole_batch_errors_and_transport_failures_are_reported_not_raised() -> None:
    throttled = await _client(lambda r: httpx.Response(429, headers={"Retry-After": "7"}, json={})).send(
        ITEMS
    )
    assert throttled.status == 429
    assert throttled.retry_after == "7"
    assert throttled.items == {}

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    unreachable = await _client(broken).send(ITEMS)
    assert unreachable.status == 0
    assert "no answer" in (unreachable.error or "")


async def test_redirects_are_never_followed() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        return httpx.Response(302, headers={"Location": "https://evil.example/steal"})

    response = await _client(handler).send(ITEMS)
    assert response.status == 302
    assert len(calls) == 1


async def test_token_is_cached_until_near_expiry() -> None:
    credential = CountingCredential(lifetime=3600)
    client = _client(lambda r: httpx.Response(200, json={"responses": []}), credential)
    await client.send(ITEMS)
    await client.send(ITEMS)
    assert credential.calls == [("https://graph.microsoft.com/.default",)]

    short_lived = CountingCredential(lifetime=60)
    client = _client(lambda r: httpx.Response(200, json={"responses": []}), short_lived)
    await client.send(ITEMS)
    await client.send(ITEMS)
    assert len(short_lived.calls) == 2


async def test_token_policy_refuses_any_other_origin() -> None:
    auth = GraphTokenAuth(CountingCredential(), GRAPH)
    http = build_http_client(
        GRAPH, auth, timeout_seconds=5, transport=httpx.MockTransport(lambda r: httpx.Response(200))
    )
    with pytest.raises(UnsafeGraphEndpoint):
        await http.get("https://evil.example/collect")
    with pytest.raises(UnsafeGraphEndpoint):
        await http.get("http://graph.microsoft.com/v1.0/$batch")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/v1.0",
        "http://graph.microsoft.com/v1.0",
        "https://graph.microsoft.com.evil.example/v1.0",
    ],
)
def test_real_credential_only_talks_to_graph_over_https(url: str) -> None:
    with pytest.raises(UnsafeGraphEndpoint):
        check_graph_endpoint(url, "azure")


def test_emulator_credential_refuses_anything_but_loopback() -> None:
    EmulatorCredential("http://127.0.0.1:7072/v1.0")
    EmulatorCredential("http://localhost:7072/v1.0")
    EmulatorCredential("http://[::1]:7072/v1.0")
    with pytest.raises(UnsafeGraphEndpoint):
        EmulatorCredential("https://graph.microsoft.com/v1.0")
    with pytest.raises(UnsafeGraphEndpoint):
        EmulatorCredential("http://10.0.0.5:7072/v1.0")
