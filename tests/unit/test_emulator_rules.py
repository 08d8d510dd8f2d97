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


# --- creates Graph will not carry out twice -----------------------------------------------------


def _write(method: str, url: str, body: Any, **headers: str) -> dict[str, Any]:
    return {
        "id": "1",
        "method": method,
        "url": url,
        "body": body,
        "headers": {"Content-Type": "application/json", **headers},
    }


async def _one(emulator: GraphEmulator, item: dict[str, Any]) -> dict[str, Any]:
    response = await _post(emulator, [item])
    answer: dict[str, Any] = response.json()["responses"][0]
    return answer


GROUP = {"displayName": "Falcon", "mailNickname": "falcon", "mailEnabled": False, "securityEnabled": True}


async def test_group_upsert_creates_once_then_updates_without_a_body() -> None:
    emulator = GraphEmulator()
    url = "/groups(uniqueName='O''Brien%20team')"
    created = await _one(emulator, _write("PATCH", url, GROUP, Prefer="create-if-missing"))
    assert created["status"] == 201
    assert created["body"]["uniqueName"] == "O'Brien team"
    again = await _one(
        emulator, _write("PATCH", url, {**GROUP, "description": "v2"}, Prefer="create-if-missing")
    )
    assert again["status"] == 204
    assert again["body"] is None
    assert len(emulator.tenant.groups) == 1
    read = await _one(emulator, {"id": "1", "method": "GET", "url": url})
    assert read["status"] == 200
    assert read["body"]["id"] == created["body"]["id"]
    assert read["body"]["description"] == "v2"


async def test_group_patch_by_unique_name_without_create_if_missing_is_an_update_of_nothing() -> None:
    emulator = GraphEmulator()
    answer = await _one(emulator, _write("PATCH", "/groups(uniqueName='missing')", GROUP))
    assert answer["status"] == 404
    assert not emulator.tenant.groups
    read = await _one(emulator, {"id": "1", "method": "GET", "url": "/groups(uniqueName='missing')"})
    assert read["status"] == 404


async def test_group_upsert_as_a_single_request_reads_the_prefer_header() -> None:
    emulator = GraphEmulator()
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        headers = {"Authorization": "Bearer t", "Prefer": "create-if-missing"}
        first = await client.patch("/v1.0/groups(uniqueName='solo')", json=GROUP, headers=headers)
        second = await client.patch("/v1.0/groups(uniqueName='solo')", json=GROUP, headers=headers)
    assert (first.status_code, second.status_code) == (201, 204)


async def test_a_taken_unique_name_is_an_object_conflict_on_post() -> None:
    emulator = GraphEmulator()
    assert (await _one(emulator, _write("POST", "/groups", {**GROUP, "uniqueName": "x"})))["status"] == 201
    answer = await _one(emulator, _write("POST", "/groups", {**GROUP, "uniqueName": "X"}))
    assert answer["status"] == 400
    assert answer["body"]["error"]["details"][0]["code"] == "ObjectConflict"


async def test_an_event_transaction_id_already_used_creates_nothing_more() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    event = {"subject": "Kick-off", "transactionId": "t-1"}
    first = await _one(emulator, _write("POST", "/users/user1@contoso.com/events", event))
    again = await _one(emulator, _write("POST", "/users/user1@contoso.com/events", event))
    assert (first["status"], again["status"]) == (201, 201)
    assert again["body"]["id"] == first["body"]["id"]
    other = await _one(
        emulator, _write("POST", "/users/user1@contoso.com/events", {**event, "subject": "Other"})
    )
    assert other["status"] == 400
    assert other["body"]["error"]["code"] == "ErrorDuplicateTransactionId"
    assert other["body"]["error"]["@event.existingEventId"] == first["body"]["id"]
    [user_id] = emulator.tenant.users
    assert len(emulator.tenant.events[user_id]) == 1
    by_id = await _one(emulator, _write("POST", f"/users/{user_id}/events", event))  # the same calendar
    assert by_id["body"]["id"] == first["body"]["id"]
    read = await _one(
        emulator,
        {"id": "1", "method": "GET", "url": f"/users/user1@contoso.com/events/{first['body']['id']}"},
    )
    assert read["body"] == first["body"]
    without = await _one(emulator, _write("POST", "/users/user1@contoso.com/events", {"subject": "Kick-off"}))
    assert without["body"]["id"] != first["body"]["id"]  # no transactionId: a new event each time


async def _team(emulator: GraphEmulator) -> None:
    emulator.tenant.groups["g1"] = {"id": "g1", "displayName": "Staff", "groupTypes": ["Unified"]}
    assert (await _one(emulator, _write("PUT", "/groups/g1/team", {})))["status"] == 201


async def test_a_second_team_on_a_group_is_a_conflict() -> None:
    emulator = GraphEmulator()
    await _team(emulator)
    assert (await _one(emulator, _write("PUT", "/groups/g1/team", {})))["status"] == 409


async def test_channel_names_are_unique_in_a_team_ignoring_case() -> None:
    emulator = GraphEmulator()
    await _team(emulator)
    first = await _one(emulator, _write("POST", "/teams/g1/channels", {"displayName": "O'Brien & Co"}))
    assert first["status"] == 201
    again = await _one(emulator, _write("POST", "/teams/g1/channels", {"displayName": "o'brien & co"}))
    assert again["status"] == 400
    assert "Channel name already existed" in again["body"]["error"]["message"]
    assert len(emulator.tenant.channels["g1"]) == 2  # General and the one created


async def test_channels_filter_by_display_name() -> None:
    emulator = GraphEmulator()
    await _team(emulator)
    await _one(emulator, _write("POST", "/teams/g1/channels", {"displayName": "O'Brien & Co"}))
    query = "$filter=displayName%20eq%20'O%27%27BRIEN%20%26%20Co'"
    found = await _one(emulator, {"id": "1", "method": "GET", "url": f"/teams/g1/channels?{query}"})
    assert [c["displayName"] for c in found["body"]["value"]] == ["O'Brien & Co"]
    plain = await _one(
        emulator, {"id": "1", "method": "GET", "url": "/teams/g1/channels?$filter=displayName eq 'General'"}
    )
    assert [c["displayName"] for c in plain["body"]["value"]] == ["General"]
    none = await _one(
        emulator, {"id": "1", "method": "GET", "url": "/teams/g1/channels?$filter=displayName eq 'x'"}
    )
    assert none["body"]["value"] == []
    unsupported = await _one(
        emulator,
        {"id": "1", "method": "GET", "url": "/teams/g1/channels?$filter=membershipType eq 'private'"},
    )
    assert unsupported["status"] == 400
