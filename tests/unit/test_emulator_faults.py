"""The emulator's seeded faults: what the caller gets, what the tenant did, and the report of
objects per natural key (in process, and over loopback where a connection must really drop)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from devhost.stack import serve_emulator
from emulator.app import GraphEmulator

AUTH = {"Authorization": "Bearer t"}


def _user(n: int) -> dict[str, Any]:
    body = {"userPrincipalName": f"f{n}@contoso.com", "displayName": f"F {n}", "mailNickname": f"f{n}"}
    return {
        "id": str(n),
        "method": "POST",
        "url": "/users",
        "body": body,
        "headers": {"Content-Type": "application/json"},
    }


def _group(n: int, unique: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"displayName": f"G {n}", "mailNickname": f"g{n}"}
    if unique:
        body["uniqueName"] = f"g{n}"
    return {
        "id": str(n),
        "method": "POST",
        "url": "/groups",
        "body": body,
        "headers": {"Content-Type": "application/json"},
    }


async def _post(emulator: GraphEmulator, requests: list[dict[str, Any]]) -> httpx.Response:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post("/v1.0/$batch", json={"requests": requests}, headers=AUTH)


async def _report(emulator: GraphEmulator, path: str) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get(path)
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    return report


async def test_an_item_error_after_acting_leaves_the_work_done_and_the_log_says_so() -> None:
    emulator = GraphEmulator()
    emulator.configure(
        {"faults": {"seed": 1, "itemErrors": {"share": 1, "answers": [{"status": 504, "acted": True}]}}}
    )
    answer = (await _post(emulator, [_user(1)])).json()["responses"][0]
    assert answer["status"] == 504
    assert emulator.tenant.find_user("f1@contoso.com") is not None
    [item] = emulator.batch_calls()[0]["items"]
    assert (item["status"], item["tenantStatus"], item["acted"]) == (504, 201, True)


async def test_an_item_error_before_acting_does_nothing() -> None:
    emulator = GraphEmulator()
    emulator.configure({"faults": {"itemErrors": {"share": 1, "answers": [{"status": 503, "acted": False}]}}})
    answer = (await _post(emulator, [_user(1)])).json()["responses"][0]
    assert answer["status"] == 503
    assert emulator.tenant.find_user("f1@contoso.com") is None
    assert emulator.batch_calls()[0]["items"][0]["acted"] is False


async def test_reads_are_not_faulted_unless_asked() -> None:
    emulator = GraphEmulator()
    emulator.tenant.seed_users(1)
    emulator.configure({"faults": {"itemErrors": {"share": 1}}})
    read = {"id": "1", "method": "GET", "url": "/users/user1@contoso.com"}
    assert (await _post(emulator, [read])).json()["responses"][0]["status"] == 200


async def test_a_whole_batch_error_is_logged_with_its_items_and_nothing_is_done() -> None:
    emulator = GraphEmulator()
    emulator.configure({"faults": {"batchErrors": {"share": 1, "status": 503, "retryAfter": "1"}}})
    response = await _post(emulator, [_user(1), _user(2)])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert not emulator.tenant.users
    call = emulator.batch_calls()[0]
    assert call["fault"] == "batchErrors"
    assert [item["status"] for item in call["items"]] == [None, None]


async def test_an_answer_missing_item_ids_still_did_every_item() -> None:
    emulator = GraphEmulator()
    emulator.configure({"faults": {"missingAnswers": {"share": 1, "itemShare": 0.5}}})
    response = await _post(emulator, [_user(n) for n in range(1, 5)])
    assert len(response.json()["responses"]) == 2
    assert len(emulator.tenant.users) == 4
    items = emulator.batch_calls()[0]["items"]
    assert sorted(str(item["status"]) for item in items) == ["201", "201", "None", "None"]
    assert all(item["tenantStatus"] == 201 for item in items if item["status"] is None)


async def test_a_dropped_connection_in_process_raises_and_after_acting_did_the_work() -> None:
    emulator = GraphEmulator()
    emulator.configure({"faults": {"dropsAfterActing": {"share": 1}}})
    with pytest.raises(ConnectionAbortedError):
        await _post(emulator, [_user(1)])
    assert emulator.tenant.find_user("f1@contoso.com") is not None
    assert emulator.batch_calls()[0]["status"] is None


async def test_the_same_seed_gives_the_same_faults() -> None:
    def config(seed: int) -> dict[str, Any]:
        return {"faults": {"seed": seed, "itemErrors": {"share": 0.5}, "missingAnswers": {"share": 0.3}}}

    async def statuses(seed: int) -> list[Any]:
        emulator = GraphEmulator()
        emulator.configure(config(seed))
        for _ in range(5):
            await _post(emulator, [_user(n) for n in range(1, 11)])
        return [item["status"] for call in emulator.batch_calls() for item in call["items"]]

    first, again, other = await statuses(3), await statuses(3), await statuses(4)
    assert first == again
    assert first != other


async def test_invalid_fault_settings_are_a_400() -> None:
    emulator = GraphEmulator()
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        invalid: list[dict[str, Any]] = [
            {"itemErrors": {"share": 2}},
            {"dropsBeforeActing": {"share": 0.6}, "dropsAfterActing": {"share": 0.6}},
            {"noSuchFault": {}},
        ]
        for bad in invalid:
            response = await client.put("/_emulator/config", json={"faults": bad})
            assert response.status_code == 400, bad


async def test_creates_report_counts_per_natural_key_and_references_done_behind_lost_answers() -> None:
    emulator = GraphEmulator()
    twice = {**_group(1), "id": "9"}
    await _post(emulator, [_group(1), twice, _group(2, unique=True), _user(3)])
    [first, *_] = [g["id"] for g in emulator.tenant.groups.values()]
    user_id = next(iter(emulator.tenant.users))
    emulator.configure({"faults": {"dropsAfterActing": {"share": 1}}})
    ref = {
        "id": "1",
        "method": "POST",
        "url": f"/groups/{first}/members/$ref",
        "body": {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user_id}"},
        "headers": {"Content-Type": "application/json"},
    }
    with pytest.raises(ConnectionAbortedError):
        await _post(emulator, [ref])
    report = await _report(emulator, "/_emulator/creates")
    assert report["groups"]["duplicates"]["mailNickname"] == {"g1": 2}
    assert report["groups"]["duplicates"]["uniqueName"] == {}
    assert report["users"]["creates"] == {"f3@contoso.com": 1}
    assert report["users"]["duplicates"] == {}
    assert report["references"]["accepted"] == {f"{first}|members|{user_id}": 1}
    faults = await _report(emulator, "/_emulator/faults")
    assert faults == {"configured": True, "injected": {"dropsAfterActing": 1}}


def test_over_a_socket_drops_cut_the_connection_and_unanswered_calls_hold_until_the_caller_leaves() -> None:
    with serve_emulator() as served:
        emulator = served.emulator
        url = f"{served.base_url}/$batch"
        emulator.configure({"faults": {"dropsBeforeActing": {"share": 1}}})
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(url, json={"requests": [_user(1)]}, headers=AUTH, timeout=5)
        assert not emulator.tenant.users
        emulator.configure({"faults": {"noAnswers": {"share": 1}}})
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json={"requests": [_user(2)]}, headers=AUTH, timeout=0.5)
        assert time.monotonic() - started < 3
        assert emulator.tenant.find_user("f2@contoso.com") is not None
        emulator.configure({"faults": {"lateAnswers": {"share": 1, "seconds": 0.2}}})
        late = httpx.post(url, json={"requests": [_user(3)]}, headers=AUTH, timeout=5)
        assert late.json()["responses"][0]["status"] == 201
