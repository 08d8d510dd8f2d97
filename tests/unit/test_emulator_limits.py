"""The emulator's model of Graph's identity limits (in-process, a hand-driven clock)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from emulator.app import GraphEmulator
from emulator.limits import format_seconds, resource_units

GUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
JSON = {"Content-Type": "application/json"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> GraphEmulator:
    emulator = GraphEmulator(clock=clock)
    emulator.tenant.seed_users(30)
    return emulator


@pytest.fixture
async def client(emulator: GraphEmulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://emulator", headers={"Authorization": "Bearer emulator-token"}
    ) as client:
        yield client


def _patch(i: int, title: str = "Engineer") -> dict[str, Any]:
    return {
        "id": str(i),
        "method": "PATCH",
        "url": f"/users/user{i}@contoso.com",
        "body": {"jobTitle": title},
        "headers": JSON,
    }


def _get(i: int | str, url: str) -> dict[str, Any]:
    return {"id": str(i), "method": "GET", "url": url}


async def _batch(client: httpx.AsyncClient, requests: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    response = await client.post("/v1.0/$batch", json={"requests": requests}, **kw)
    assert response.status_code == 200
    return {r["id"]: r for r in response.json()["responses"]}


async def _configure(client: httpx.AsyncClient, limits: dict[str, Any] | None) -> None:
    response = await client.put("/_emulator/config", json={"limits": limits})
    assert response.status_code == 204


@pytest.mark.parametrize(
    ("method", "url", "units"),
    [
        ("GET", "/users", 2),
        ("GET", "users?$select=id,displayName", 1),
        ("GET", "/users?$top=999&$select=id", 1),
        ("GET", "/users?$top=5", 1),
        ("GET", "/users?$expand=manager", 3),
        ("GET", "/users/user1@contoso.com", 1),
        ("GET", "/users/user1@contoso.com?$select=id", 1),
        ("GET", "/users/user1@contoso.com/memberOf", 2),
        ("GET", "/me/memberOf?$expand=x", 3),
        ("GET", "/groups/g1/members", 3),
        ("GET", "/groups/g1/members?%24select=id", 2),
        ("GET", "/groups/g1/transitiveMembers", 5),
        ("GET", "/subscribedSkus", 3),
        ("POST", "/directoryObjects/getByIds", 5),
        ("POST", "/directoryObjects/getByIds?$select=id", 2),
        ("POST", "/users/u1/checkMemberGroups", 4),
        ("POST", "/users", 1),
        ("PATCH", "/users/user1@contoso.com", 1),
        ("DELETE", "/groups/g1/members/u1/$ref", 1),
        ("PUT", "/groups/g1/team", 1),
        ("GET", "/users?$filter=country eq 'Denmark'&$select=id", 1),
    ],
)
def test_resource_units_follow_the_documented_costs(method: str, url: str, units: int) -> None:
    assert resource_units(method, url) == units


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.05, "0.05"), (1.0, "1"), (2.1281, "2.129"), (0.0, "0.001"), (0.0100000001, "0.01")],
)
def test_computed_retry_after_is_rounded_up_to_the_millisecond(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


async def test_write_burst_admits_exactly_its_size_and_throttles_the_rest(
    client: httpx.AsyncClient, emulator: GraphEmulator
) -> None:
    await _configure(client, {"writesPerSecond": 100, "writeBurst": 20, "unitBurst": 800})
    first = await _batch(client, [_patch(i) for i in range(1, 21)])
    second = await _batch(client, [_patch(i, "Throttled") for i in range(21, 26)])

    assert {a["status"] for a in first.values()} == {204}
    assert all(a["headers"]["x-ms-resource-unit"] == "1" for a in first.values())
    assert {a["status"] for a in second.values()} == {429}
    for answer in second.values():
        headers = answer["headers"]
        assert headers["Retry-After"] == "0.01"  # one write token at 100 per second
        assert re.fullmatch(f"Tenant_Application/Write/{GUID}/{GUID}", headers["x-ms-throttle-scope"])
        assert headers["x-ms-throttle-information"] == "WriteLimitExceeded"
        assert answer["body"]["error"]["code"] == "TooManyRequests"
    # A throttled item never reaches the tenant.
    for i in range(21, 26):
        user = emulator.tenant.find_user(f"user{i}@contoso.com")
        assert user is not None
        assert "jobTitle" not in user
    items = emulator.batch_calls()[1]["items"]
    assert [i["status"] for i in items] == [429] * 5
    assert {i["throttleScope"] for i in items} == {second["21"]["headers"]["x-ms-throttle-scope"]}


async def test_tokens_come_back_at_the_refill_rate(client: httpx.AsyncClient, clock: Clock) -> None:
    await _configure(client, {"writesPerSecond": 4, "writeBurst": 2})
    answers = await _batch(client, [_patch(i) for i in range(1, 4)])
    assert [answers[str(i)]["status"] for i in range(1, 4)] == [204, 204, 429]
    assert answers["3"]["headers"]["Retry-After"] == "0.25"

    clock.now += 0.2
    assert (await _batch(client, [_patch(3)]))["3"]["status"] == 429
    clock.now += 0.05
    assert (await _batch(client, [_patch(3)]))["3"]["status"] == 204


async def test_reads_take_resource_units_and_no_write_tokens(
    client: httpx.AsyncClient, emulator: GraphEmulator
) -> None:
    await _configure(client, {"writeBurst": 1, "unitsPerSecond": 2, "unitBurst": 6})
    reads = await _batch(
        client,
        [
            _get("list", "/users"),
            _get("one", "/users/user1@contoso.com"),
            _get("select", "/users?$select=id"),
            _get("expand", "/users?$expand=manager"),
        ],
    )
    assert {k: (a["status"], a["headers"]["x-ms-resource-unit"]) for k, a in reads.items()} == {
        "list": (200, "2"),
        "one": (200, "1"),
        "select": (200, "1"),
        "expand": (429, "3"),  # 4 units used of 6: 3 more do not fit
    }
    throttled = reads["expand"]["headers"]
    assert throttled["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert throttled["x-ms-throttle-scope"].startswith("Tenant_Application/ReadWrite/")
    assert throttled["Retry-After"] == "0.5"  # 1 unit missing at 2 per second
    # The single write token is still there: reads did not take it.
    write = await _batch(client, [_patch(1)])
    assert write["1"]["status"] == 204
    assert [i["resourceUnits"] for i in emulator.batch_calls()[0]["items"]] == ["2", "1", "1", "3"]


async def test_limit_percentage_is_sent_above_0_8_and_counts_throttled_attempts(
    client: httpx.AsyncClient, emulator: GraphEmulator, clock: Clock
) -> None:
    # 1 write per second over a 10 s window: 10 writes are the whole limit; the bucket holds 10.
    await _configure(client, {"writesPerSecond": 1, "writeBurst": 10, "windowSeconds": 10})
    answers = await _batch(client, [_patch(i) for i in range(1, 21)])
    percentages = [answers[str(i)]["headers"].get("x-ms-throttle-limit-percentage") for i in range(1, 21)]
    assert percentages[:8] == [None] * 8  # 0.1 .. 0.8: not above 0.8
    assert percentages[8:10] == ["0.90", "1.00"]
    assert percentages[14] == "1.50"  # throttled attempts count on
    assert percentages[17:] == ["1.80", "1.80", "1.80"]  # 1.9 and 2.0 are sent as the top value
    assert [answers[str(i)]["status"] for i in range(1, 21)] == [204] * 10 + [429] * 10
    items = emulator.batch_calls()[0]["items"]
    assert [i.get("limitPercentage") for i in items] == percentages

    clock.now += 10  # the window has passed and the bucket is full again
    later = await _batch(client, [_patch(1)])
    assert later["1"]["status"] == 204
    assert "x-ms-throttle-limit-percentage" not in later["1"]["headers"]


async def test_direct_requests_share_the_bucket_with_batch_items(
    client: httpx.AsyncClient, emulator: GraphEmulator
) -> None:
    await _configure(client, {"writesPerSecond": 10, "writeBurst": 3})
    assert {a["status"] for a in (await _batch(client, [_patch(1), _patch(2)])).values()} == {204}

    admitted = await client.patch("/v1.0/users/user3@contoso.com", json={"jobTitle": "Direct"})
    throttled = await client.patch("/v1.0/users/user4@contoso.com", json={"jobTitle": "Direct"})
    read = await client.get("/v1.0/users/user3@contoso.com?$select=id,jobTitle")

    assert admitted.status_code == 204
    assert admitted.headers["x-ms-resource-unit"] == "1"
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "0.1"
    assert throttled.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert read.status_code == 200
    assert read.json()["jobTitle"] == "Direct"
    assert emulator.tenant.find_user("user4@contoso.com").get("jobTitle") is None  # type: ignore[union-attr]

    assert len(emulator.batch_calls()) == 1
    direct = emulator.direct_calls()
    assert [(c["kind"], c["status"], len(c["items"])) for c in direct] == [
        ("direct", 204, 1),
        ("direct", 429, 1),
        ("direct", 200, 1),
    ]
    assert direct[1]["items"][0] | {"throttleScope": None} == {
        "id": None,
        "method": "PATCH",
        "url": "/users/user4@contoso.com",
        "body": {"jobTitle": "Direct"},
        "status": 429,
        "retryAfter": "0.1",
        "resourceUnits": "1",
        "throttleScope": None,
    }
    assert direct[2]["items"][0]["url"] == "/users/user3@contoso.com?$select=id,jobTitle"
    everything = (await client.get("/_emulator/calls")).json()["calls"]
    assert [c["kind"] for c in everything] == ["batch", "direct", "direct", "direct"]
    only_batches = (await client.get("/_emulator/calls", params={"kind": "batch"})).json()["calls"]
    assert [c["kind"] for c in only_batches] == ["batch"]


async def test_each_bearer_token_is_its_own_application(client: httpx.AsyncClient) -> None:
    await _configure(client, {"writesPerSecond": 1, "writeBurst": 1})
    first = await _batch(client, [_patch(1), _patch(2)])
    other = await _batch(client, [_patch(2)], headers={"Authorization": "Bearer another-app"})
    again = await _batch(client, [_patch(3)], headers={"Authorization": "Bearer another-app"})
    assert (first["1"]["status"], first["2"]["status"]) == (204, 429)
    assert other["2"]["status"] == 204
    assert again["3"]["status"] == 429
    assert first["2"]["headers"]["x-ms-throttle-scope"] != again["3"]["headers"]["x-ms-throttle-scope"]


@pytest.mark.parametrize("configured", ["2", "1.5", "2,120"])
async def test_configured_retry_after_replaces_the_computed_one(
    client: httpx.AsyncClient, configured: str
) -> None:
    await _configure(client, {"writeBurst": 1, "retryAfter": configured})
    answers = await _batch(client, [_patch(1), _patch(2)])
    assert answers["2"]["headers"]["Retry-After"] == configured


async def test_configured_retry_after_can_be_an_http_date(client: httpx.AsyncClient) -> None:
    await _configure(client, {"writeBurst": 1, "retryAfter": "http-date:3"})
    answers = await _batch(client, [_patch(1), _patch(2)])
    assert parsedate_to_datetime(answers["2"]["headers"]["Retry-After"]) is not None


async def test_reset_and_null_turn_the_limits_off(client: httpx.AsyncClient) -> None:
    await _configure(client, {"writeBurst": 1})
    assert (await client.patch("/v1.0/users/user1@contoso.com", json={})).status_code == 204
    assert (await client.patch("/v1.0/users/user1@contoso.com", json={})).status_code == 429

    await _configure(client, None)
    answer = await client.patch("/v1.0/users/user1@contoso.com", json={})
    assert answer.status_code == 204
    assert "x-ms-resource-unit" not in answer.headers

    await _configure(client, {"writeBurst": 1})
    assert (await client.post("/_emulator/reset")).status_code == 204
    await client.post("/_emulator/seed", json={"users": 2})
    answers = await _batch(client, [_patch(1), _patch(2)])
    assert {a["status"] for a in answers.values()} == {204}
    assert all("x-ms-resource-unit" not in a["headers"] for a in answers.values())


async def test_invalid_limits_are_rejected_and_change_nothing(client: httpx.AsyncClient) -> None:
    for bad in ({"writesPerSecond": 0}, {"writeBurst": -1}, {"burst": 3}, ["writeBurst"]):
        response = await client.put("/_emulator/config", json={"limits": bad, "latencyMs": 5})
        assert response.status_code == 400
    answers = await _batch(client, [_patch(1)])
    assert "x-ms-resource-unit" not in answers["1"]["headers"]


async def test_old_throttle_bucket_still_works_beside_the_limits(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/_emulator/config",
        json={"throttle": {"capacity": 1, "refillPerSecond": 0}, "retryAfter": "7", "limits": {}},
    )
    assert response.status_code == 204
    answers = await _batch(client, [_patch(1), _get(2, "/users/user2@contoso.com")])
    assert answers["1"]["status"] == 204
    assert answers["2"]["status"] == 429
    assert answers["2"]["headers"]["Retry-After"] == "7"
    assert "x-ms-throttle-scope" not in answers["2"]["headers"]


async def test_direct_requests_check_auth_apply_item_faults_and_answer_json(
    client: httpx.AsyncClient, emulator: GraphEmulator
) -> None:
    anonymous = await client.get("/v1.0/users/user1@contoso.com", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    emulator.configure({"itemFaults": [{"urlContains": "user2@", "status": 503, "retryAfter": "1"}]})
    faulted = await client.get("/v1.0/users/user2@contoso.com")
    assert (faulted.status_code, faulted.headers["Retry-After"]) == (503, "1")
    created = await client.post(
        "/v1.0/users", json={"userPrincipalName": "ada@contoso.com", "displayName": "Ada"}
    )
    assert created.status_code == 201
    assert created.json()["userPrincipalName"] == "ada@contoso.com"
    assert created.headers["content-type"] == "application/json"
    missing = await client.delete("/v1.0/users/nobody@contoso.com")
    assert missing.status_code == 404
    assert [c["status"] for c in emulator.direct_calls()] == [401, 503, 201, 404]
    assert emulator.batch_calls() == []
