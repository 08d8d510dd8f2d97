"""The emulator enforces Graph's batch rules (in-process, through httpx.ASGITransport)."""

from __future__ import annotations

from typing import Any

import httpx

from emulator.app import GraphEmulator


async def _post(emulator: GraphEmulator, requests: list[dict[str, Any]], auth: bool = True) -> httpx.Response:
    headers = {"Authorization": "Bearer t"} if auth else {}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post("/v1.0/$batch", json={"requests": requests}, headers=headers)


def _get(i: int | str, **extra: Any) -> dict[str, Any]:
    return {"id": str(i), "method": "GET", "url": f"/users/user{i}@contoso.com", **extra}


async def test_more_than_20_requests_is_a_whole_batch_400() -> None:
    response = await _post(GraphEmulator(), [_get(i) for i in range(21)])
    assert response.status_code == 400


async def test_numeric_or_duplicate_ids_and_absolute_urls_are_rejected() -> None:
    emulator = GraphEmulator()
    assert (await _post(emulator, [{**_get(1), "id": 1}])).status_code == 400
    assert (await _post(emulator, [_get(1), {**_get(2), "id": "1"}])).status_code == 400
    assert (
        await _post(emulator, [{**_get(1), "url": "https://graph.microsoft.com/v1.0/users"}])
    ).status_code == 400


async def test_mixed_parallel_and_sequential_is_rejected() -> None:
    requests = [_get(1), _get(2, dependsOn=["1"]), _get(3)]
    response = await _post(GraphEmulator(), requests)
    assert response.status_code == 400
    assert "fully sequential or fully parallel" in response.json()["error"]["message"]


async def test_dependency_listed_after_its_dependent_is_invalid() -> None:
    response = await _post(GraphEmulator(), [_get(2, dependsOn=["1"]), _get(1)])
    assert response.status_code == 400


async def test_sequential_batch_fails_dependents_with_424() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(3)
    requests = [_get("missing"), _get(2, dependsOn=["missing"]), _get(3, dependsOn=["2"])]
    response = await _post(emulator, requests)
    statuses = {r["id"]: r["status"] for r in response.json()["responses"]}
    assert statuses == {"missing": 404, "2": 424, "3": 424}


async def test_write_without_content_type_or_body_fails_the_item() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    response = await _post(emulator, [{"id": "1", "method": "PATCH", "url": "/users/user1@contoso.com"}])
    item = response.json()["responses"][0]
    assert item["status"] == 400
    assert "Content-Type header or body" in item["body"]["error"]["message"]


async def test_token_bucket_throttles_per_item_with_retry_after() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(5)
    emulator.configure({"throttle": {"capacity": 3, "refillPerSecond": 0}, "retryAfter": "2.5"})
    response = await _post(emulator, [_get(i) for i in range(1, 6)])
    assert response.status_code == 200
    answers = response.json()["responses"]
    throttled = [a for a in answers if a["status"] == 429]
    assert len(throttled) == 2
    assert all(a["headers"]["Retry-After"] == "2.5" for a in throttled)


async def test_missing_bearer_token_is_401_and_every_call_is_recorded() -> None:
    emulator = GraphEmulator()
    assert (await _post(emulator, [_get(1)], auth=False)).status_code == 401
    await _post(emulator, [_get(1)])
    assert [c["status"] for c in emulator.batch_calls()] == [401, 200]


async def test_existing_user_principal_name_is_an_object_conflict() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    body = {"userPrincipalName": "user1@contoso.com"}
    create = {
        "id": "1",
        "method": "POST",
        "url": "/users",
        "body": body,
        "headers": {"Content-Type": "application/json"},
    }
    item = (await _post(emulator, [create])).json()["responses"][0]
    assert item["status"] == 400
    assert item["body"]["error"]["details"][0]["code"] == "ObjectConflict"
