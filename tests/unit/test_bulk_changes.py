"""A bulk row against what Graph holds (batching.bulk.changes), and how users are read
(batching.bulk.current): which way costs fewer resource units, and what each read looks like."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from pydantic import JsonValue

from batching.bulk.changes import NO_CHANGE, plan_row
from batching.bulk.current import CurrentUser, ReadFailed, Strategy, UserDirectory, choose
from batching.bulk.reader import RowOperations, read_rows
from batching.coalescer import BatchCoalescer
from batching.graph.client import GraphBatchClient

HEADER = "userPrincipalName,jobTitle,officeLocation,accountEnabled,manager"


def _row(line: str) -> RowOperations:
    (row,) = list(read_rows(io.BytesIO(f"{HEADER}\n{line}\n".encode())))
    assert isinstance(row, RowOperations)
    return row


def _current(
    manager: tuple[str, str] | None = ("m-id", "Boss@contoso.com"), **values: JsonValue
) -> CurrentUser:
    held = {"id": "u-id", "userprincipalname": "ada@contoso.com", **{k.lower(): v for k, v in values.items()}}
    return CurrentUser("u-id", "ada@contoso.com", held, *(manager or (None, None)))


def test_a_row_that_matches_graph_sends_nothing() -> None:
    plan = plan_row(
        _row("ada@contoso.com,Engineer,B2,yes,BOSS@contoso.com"),
        _current(jobTitle="Engineer", officeLocation="B2", accountEnabled=True),
    )

    assert plan.send == ()
    assert [op.id for op in plan.unchanged] == ["line-2", "line-2-manager"]
    assert NO_CHANGE == "no change"


def test_only_the_differing_properties_are_patched_with_the_files_values() -> None:
    plan = plan_row(
        _row("ada@contoso.com,Lead,B2,false,"),
        _current(jobTitle="Engineer", officeLocation="B2", accountEnabled=True),
    )

    (patch,) = plan.send
    assert patch.body == {"jobTitle": "Lead", "accountEnabled": False}
    assert {(c.name, c.current, c.new) for c in plan.changes} == {
        ("jobTitle", "Engineer", "Lead"),
        ("accountEnabled", True, False),
    }


@pytest.mark.parametrize(("held", "changed"), [(None, False), ("", False), ("B2", True)])
def test_clearing_is_a_change_only_when_graph_holds_a_value(held: str | None, changed: bool) -> None:
    plan = plan_row(_row("ada@contoso.com,,#clear,,"), _current(officeLocation=held))

    assert plan.changed is changed
    if changed:
        assert plan.send[0].body == {"officeLocation": None}


@pytest.mark.parametrize(
    ("cell", "manager", "method"),
    [
        ("m-ID", ("m-id", "boss@contoso.com"), None),  # the same manager by id, in another case
        ("boss@CONTOSO.com", ("m-id", "Boss@contoso.com"), None),  # by UPN, in another case
        ("new@contoso.com", ("m-id", "boss@contoso.com"), "PUT"),
        ("new@contoso.com", None, "PUT"),  # no manager yet
        ("#clear", ("m-id", "boss@contoso.com"), "DELETE"),
        ("#clear", None, None),  # nothing to remove
    ],
)
def test_the_manager_compares_by_id_or_upn(
    cell: str, manager: tuple[str, str] | None, method: str | None
) -> None:
    plan = plan_row(_row(f"ada@contoso.com,,,,{cell}"), _current(manager=manager))

    assert [op.method for op in plan.send] == ([method] if method else [])


def test_text_compares_as_written_so_a_change_of_case_is_written() -> None:
    plan = plan_row(_row("ada@contoso.com,engineer,,,"), _current(jobTitle="Engineer"))

    assert plan.send[0].body == {"jobTitle": "engineer"}


def test_a_user_the_read_did_not_find_is_sent_as_it_is() -> None:
    row = _row("ada@contoso.com,Engineer,,,boss@contoso.com")

    plan = plan_row(row, None)

    assert plan.send == row.operations
    assert not plan.found


@pytest.mark.parametrize(
    ("rows", "tenant", "manager", "strategy"),
    [
        (20_000, 100_000, True, Strategy.SCAN),  # 2,000 units against 2,668
        (20_000, 100_000, False, Strategy.SCAN),  # 101 against 1,334
        (1_000, 100_000, True, Strategy.LOOKUP),  # 134 against 2,000
        (2_000, 100_000, False, Strategy.SCAN),  # 101 against 134
        (500, 100_000, False, Strategy.LOOKUP),  # 34 against 101
        (20_000, None, False, Strategy.LOOKUP),  # tenant size unknown
    ],
)
def test_users_are_read_the_way_that_costs_fewer_resource_units(
    rows: int, tenant: int | None, manager: bool, strategy: Strategy
) -> None:
    assert choose(rows, tenant, manager=manager, select=("id",)).strategy is strategy


def _directory(answer: Any, seen: list[dict[str, Any]]) -> UserDirectory:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.extend(body["requests"])
        responses = [
            {"id": item["id"], "status": 200, "headers": {}, "body": answer(item)}
            for item in body["requests"]
        ]
        return httpx.Response(200, json={"responses": responses})

    http = httpx.AsyncClient(
        base_url="https://graph.microsoft.com/v1.0/", transport=httpx.MockTransport(handler)
    )
    return UserDirectory(BatchCoalescer(GraphBatchClient(http)), "https://graph.microsoft.com/v1.0")


async def test_lookups_ask_for_15_users_a_request_with_quotes_doubled_and_nothing_that_ends_the_option() -> (
    None
):
    seen: list[dict[str, Any]] = []
    directory = _directory(lambda item: {"value": []}, seen)
    keys = [("userPrincipalName", f"user{n}@contoso.com") for n in range(31)] + [
        ("userPrincipalName", "o'brien&x#@contoso.com")
    ]

    await directory.lookup(keys, ("id", "userPrincipalName", "jobTitle"), manager=True)

    assert len(seen) == 3
    urls = [item["url"] for item in seen]
    assert all(url.startswith("/users?$filter=userPrincipalName%20in%20(") for url in urls)
    assert all(
        "&$select=id,userPrincipalName,jobTitle&$expand=manager($select=id,userPrincipalName)" in url
        for url in urls
    )
    assert "'o''brien%26x%23@contoso.com'" in urls[2]


async def test_a_scan_follows_each_next_link_as_written_and_refuses_one_to_another_host() -> None:
    pages = {
        "first": {
            "value": [{"ID": "1", "UserPrincipalName": "a@contoso.com"}],
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?%24select=id&%24skiptoken=X%27ab%27",
        },
        "second": {
            "value": [{"id": "2", "userPrincipalName": "b@contoso.com"}],
            "@odata.nextLink": "https://evil.example/v1.0/users?$skiptoken=Y",
        },
    }
    seen: list[dict[str, Any]] = []
    directory = _directory(lambda item: pages["second" if "skiptoken" in item["url"] else "first"], seen)

    users: list[CurrentUser] = []

    async def read_all() -> None:
        async for page in directory.scan(("id", "userPrincipalName"), manager=False):
            users.extend(page)

    with pytest.raises(ReadFailed):
        await read_all()

    assert [user.user_principal_name for user in users] == ["a@contoso.com", "b@contoso.com"]
    assert seen[1]["url"] == "/users?%24select=id&%24skiptoken=X%27ab%27"
