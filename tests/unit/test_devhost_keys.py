"""The dev host checks function keys the way the Azure Functions host does, per function."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from devhost.host import entries_of, http_app
from devhost.keys import KEY_SETTING, HostKeys, auth_level, host_keys, load_or_create, presented_key
from tests.unit.helpers import fresh_function_app

ROOT = Path(__file__).resolve().parents[2]
KEY = "host-key-1"
OTHER = "host-key-2"
MASTER = "master-key"


def _sample_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="jobs", methods=["POST"])
    def submit(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ran", status_code=202)

    @app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def openapi(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("{}", mimetype="application/json")

    @app.route(route="operator", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def operator(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    keys = HostKeys((KEY, OTHER), MASTER, source="test")
    transport = httpx.ASGITransport(app=http_app(entries_of(_sample_app()), keys))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/api/jobs", {}),
        ("/api/jobs?code=wrong", {}),
        ("/api/jobs", {"x-functions-key": "wrong"}),
        ("/api/jobs", {"x-functions-key": ""}),
        ("/api/jobs?code=", {}),
        ("/api/jobs?code=%C3%A9%00", {}),  # not ASCII, a NUL: refused, never a 500
        (f"/api/jobs?code={KEY}", {"x-functions-key": "wrong"}),  # the header is the key used
        (f"/api/jobs?key={KEY}", {}),
        ("/api/jobs", {"authorization": f"Bearer {KEY}"}),
    ],
)
async def test_a_function_level_route_without_a_valid_key_is_401_with_an_empty_body(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> None:
    response = await client.post(url, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.content == b""


async def test_a_key_header_that_is_not_ascii_is_401_not_a_crash(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/jobs", headers={b"x-functions-key": "\u00e9\u00e9".encode()})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/api/jobs", {"x-functions-key": KEY}),
        ("/api/jobs", {"X-Functions-Key": OTHER}),  # any host key, header name in any case
        (f"/api/jobs?code={KEY}", {}),
        (f"/api/jobs?code={KEY}&code=wrong", {}),  # the first `code`
        ("/api/jobs?code=wrong", {"x-functions-key": KEY}),
        (f"/api/jobs?code={MASTER}", {}),  # the master key opens function-level routes too
    ],
)
async def test_a_valid_key_in_the_header_or_the_code_parameter_runs_the_function(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> None:
    response = await client.post(url, headers=headers, content=b"{}")
    assert response.status_code == 202
    assert response.text == "ran"


async def test_anonymous_routes_need_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/openapi.json")).status_code == 200
    assert (await client.get("/api/openapi.json?code=wrong")).status_code == 200


async def test_admin_routes_need_the_master_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/operator", headers={"x-functions-key": KEY})).status_code == 401
    assert (await client.get("/api/operator", headers={"x-functions-key": MASTER})).status_code == 200


async def test_unknown_routes_stay_404_and_the_method_is_checked_before_the_key(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/nothing")).status_code == 404
    assert (await client.get("/api/jobs")).status_code == 405


def test_the_key_source_matches_the_azure_host() -> None:
    assert presented_key([], []) is None
    assert presented_key(["h"], ["c"]) == "h"
    assert presented_key([""], ["c"]) == ""  # a present header wins even when empty
    assert presented_key([], ["c1", "c2"]) == "c1"


def test_auth_level_is_read_per_function_from_the_trigger_metadata() -> None:
    levels = {
        entry.name: auth_level(entry.trigger)
        for entry in entries_of(fresh_function_app())
        if entry.trigger["type"] == "httpTrigger"
    }
    assert levels["submit_job"] == levels["job_status"] == "function"
    assert auth_level({}) == "function"  # Azure's default for an httpTrigger
    assert auth_level({"authLevel": "Anonymous"}) == "anonymous"
    with pytest.raises(ValueError, match="authLevel"):
        auth_level({"authLevel": "system"})


def test_the_keys_file_is_written_once_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "local.keys.json"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.default) >= 43
    assert first.master_key is None
    assert json.loads(path.read_text())["functionKeys"] == {"default": first.default}
    assert load_or_create(path) == first
    assert load_or_create(tmp_path / "other.json").default != first.default


def test_a_keys_file_may_name_several_keys_and_a_master_key(tmp_path: Path) -> None:
    path = tmp_path / "local.keys.json"
    path.write_text(json.dumps({"functionKeys": {"default": "a", "flows": "b"}, "masterKey": "m"}))
    keys = load_or_create(path)
    assert keys.allows("function", "b")
    assert keys.allows("admin", "m")
    assert not keys.allows("admin", "a")


@pytest.mark.parametrize("text", ["not json", "[]", '{"functionKeys": []}', '{"functionKeys": {}}'])
def test_a_broken_keys_file_stops_the_host_with_a_clear_message(tmp_path: Path, text: str) -> None:
    path = tmp_path / "local.keys.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"local\.keys\.json|function key"):
        load_or_create(path)


def test_the_host_key_setting_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_SETTING, "from-settings")
    keys = host_keys(tmp_path)
    assert keys.function_keys == ("from-settings",)
    assert not (tmp_path / "local.keys.json").exists()
    monkeypatch.delenv(KEY_SETTING)
    assert host_keys(tmp_path).source == "local.keys.json"
