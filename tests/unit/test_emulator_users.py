"""The emulator's `GET /users`: Graph's paging, `$select`, `$filter`, `$count`, `$expand` and
read costs, as Microsoft documents them (emulator.user_queries, emulator.limits)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emulator.app import GraphEmulator

AUTH = {"Authorization": "Bearer unit-test"}


async def _get(emulator: GraphEmulator, url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator.app), base_url="http://graph"
    ) as client:
        return await client.get(url, headers={**AUTH, **headers})


async def _all_pages(emulator: GraphEmulator, url: str) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = (await _get(emulator, next_url)).json()
        users.extend(body["value"])
        next_url = body.get("@odata.nextLink")
    return users


@pytest.fixture
def emulator() -> GraphEmulator:
    graph = GraphEmulator()
    graph.tenant.seed_users(2100, profile=True)
    return graph


async def test_pages_hold_up_to_top_and_the_next_link_leads_through_every_user(
    emulator: GraphEmulator,
) -> None:
    first = (await _get(emulator, "/v1.0/users?$select=id,userPrincipalName&$top=999")).json()

    assert len(first["value"]) == 999
    assert first["@odata.nextLink"].startswith("http://graph/v1.0/users?")
    users = await _all_pages(emulator, "/v1.0/users?$select=id,userPrincipalName&$top=999")
    assert len(users) == 2100
    assert len({user["id"] for user in users}) == 2100


async def test_a_page_with_the_manager_expanded_holds_at_most_100_users(emulator: GraphEmulator) -> None:
    url = "/v1.0/users?$select=userPrincipalName&$top=999&$expand=manager($select=id,userPrincipalName)"
    body = (await _get(emulator, url)).json()

    assert len(body["value"]) == 100
    by_upn = {user["userPrincipalName"]: user for user in body["value"]}
    assert by_upn["user25@contoso.com"]["manager"]["userPrincipalName"] == "user2@contoso.com"
    assert "manager" not in by_upn["user3@contoso.com"]  # no manager: nothing to expand


async def test_select_answers_in_graphs_own_case_and_refuses_unknown_properties(
    emulator: GraphEmulator,
) -> None:
    body = (await _get(emulator, "/v1.0/users?$select=JOBTITLE,userprincipalname&$top=1")).json()
    unknown = await _get(emulator, "/v1.0/users?$select=favouriteColour")

    assert set(body["value"][0]) == {"jobTitle", "userPrincipalName", "id"}
    assert unknown.status_code == 400


@pytest.mark.parametrize("top", ["0", "1000", "ten"])
async def test_top_outside_1_to_999_is_refused(emulator: GraphEmulator, top: str) -> None:
    response = await _get(emulator, f"/v1.0/users?$top={top}")

    assert response.status_code == 400
    assert "between 1 and 999" in response.json()["error"]["message"]


async def test_filter_in_finds_users_ignoring_case_and_takes_at_most_15_values(
    emulator: GraphEmulator,
) -> None:
    names = ",".join(f"'USER{n}@contoso.com'" for n in range(1, 16))
    found = (await _get(emulator, f"/v1.0/users?$filter=userPrincipalName in ({names})&$select=id")).json()
    too_many = await _get(emulator, f"/v1.0/users?$filter=userPrincipalName in ({names},'x@contoso.com')")

    assert len(found["value"]) == 15
    assert too_many.status_code == 400


async def test_count_needs_consistency_level_eventual_and_is_ignored_without_it(
    emulator: GraphEmulator,
) -> None:
    counted = (
        await _get(emulator, "/v1.0/users?$count=true&$top=1&$select=id", ConsistencyLevel="eventual")
    ).json()
    plain = (await _get(emulator, "/v1.0/users?$count=true&$top=1&$select=id")).json()

    assert counted["@odata.count"] == 2100
    assert "@odata.count" not in plain


async def test_a_skiptoken_from_another_query_is_refused(emulator: GraphEmulator) -> None:
    link = (await _get(emulator, "/v1.0/users?$select=id&$top=5")).json()["@odata.nextLink"]
    token = link.split("skiptoken=")[1]

    assert (await _get(emulator, f"/v1.0/users?$select=id&$top=6&$skiptoken={token}")).status_code == 400


async def test_users_inside_the_replication_lag_are_not_listed_yet(emulator: GraphEmulator) -> None:
    emulator.configure({"replicationLagSeconds": 60})
    emulator.tenant._add_user({"userPrincipalName": "new@contoso.com"})

    found = (await _get(emulator, "/v1.0/users?$filter=userPrincipalName eq 'new@contoso.com'")).json()

    assert found["value"] == []


@pytest.mark.parametrize(
    ("url", "units"),
    [
        ("/v1.0/users?$select=id&$top=999", 1),  # list 2, $select -1
        ("/v1.0/users?$select=id&$top=999&$expand=manager($select=id)", 2),  # $expand +1
        ("/v1.0/users?$count=true&$top=1&$select=id", 1),  # never below 1
        ("/v1.0/users?$filter=userPrincipalName in ('a@contoso.com')&$select=id", 1),
    ],
)
async def test_list_reads_are_charged_the_documented_resource_units(
    emulator: GraphEmulator, url: str, units: int
) -> None:
    emulator.configure({"limits": {}})

    response = await _get(emulator, url, ConsistencyLevel="eventual")

    assert response.headers["x-ms-resource-unit"] == str(units)
