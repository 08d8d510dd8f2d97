"""Who gets through the HTTP door, through the dev host: function keys as Azure checks them,
ALLOWED_CALLER_IDS against the identity App Service authentication passes on, and job ids."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import all_partitions, job, patch_users, poll_job

ALLOWED_APP = "11111111-aaaa-4bbb-8ccc-000000000001"
ALLOWED_USER = "33333333-aaaa-4bbb-8ccc-000000000003"
STRANGER = "44444444-aaaa-4bbb-8ccc-000000000004"


def _principal(app_id: str, object_id: str) -> str:
    claims = [
        {"typ": "appid", "val": app_id},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": object_id},
    ]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


@pytest.mark.parametrize("key", [None, "wrong", ""])
def test_without_a_valid_key_both_routes_answer_401_with_an_empty_body_and_nothing_is_recorded(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str], key: str | None
) -> None:
    graph.emulator.tenant.seed_users(1)
    headers = {} if key is None else {"x-functions-key": key}
    with httpx.Client(base_url=devhost.base_url, headers=headers, timeout=30) as client:
        posted = client.post("/api/jobs", content=job(patch_users(1), "no-key"))
        by_code = client.post("/api/jobs?code=wrong", content=job(patch_users(1), "no-key"))
        status = client.get("/api/jobs/no-key")
    for answer in (posted, by_code, status):
        assert answer.status_code == 401
        assert answer.content == b""
    assert "no-key" not in all_partitions(app_env)
    assert graph.emulator.batch_calls() == []


def test_a_key_in_the_header_gets_202_and_a_location_without_the_key(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(2)
    with httpx.Client(headers=devhost.headers, timeout=30) as client:
        accepted = client.post(f"{devhost.base_url}/api/jobs", content=job(patch_users(2), "by-header"))
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert location == f"{devhost.base_url}/api/jobs/by-header"
        assert poll_job(client, location)[-1].status_code == 200


def test_a_key_sent_as_code_gets_202_and_stays_in_the_location_a_poller_follows_without_headers(
    devhost: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(2)
    with httpx.Client(timeout=30) as client:  # like Power Automate: no headers when polling
        body = job(patch_users(2), "by-code")
        accepted = client.post(f"{devhost.base_url}/api/jobs", params={"code": devhost.key}, content=body)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert location == f"{devhost.base_url}/api/jobs/by-code?code={devhost.key}"
        assert accepted.json()["statusUrl"] == location
        answers = poll_job(client, location)
    assert answers[-1].status_code == 200
    assert answers[-1].json()["statusUrl"] == location


@pytest.mark.parametrize(
    "path", ["abc%0A", "abc%0D%0A", "abc%0Adef", "abc%00", "%0A", "a%20b", "abc%E2%80%A8", "%F0%9F%98%80"]
)
def test_a_job_id_with_a_line_break_or_control_character_is_400_not_500(devhost: DevHost, path: str) -> None:
    """The whole id is checked (`\\Z`, not `$`): `abc\\n` is not taken for `abc`."""
    response = httpx.get(f"{devhost.base_url}/api/jobs/{path}", headers=devhost.headers, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "jobId"
    assert "abc" not in response.text


def test_a_route_followed_by_a_line_break_is_not_the_route(devhost: DevHost) -> None:
    url = f"{devhost.base_url}/api/jobs%0A"
    response = httpx.post(url, headers=devhost.headers, content=b"{}", timeout=30)
    assert response.status_code == 404


def test_with_allowed_caller_ids_set_only_a_listed_signed_in_caller_gets_in(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(1)
    env = {**app_env, "ALLOWED_CALLER_IDS": f"{ALLOWED_APP.upper()}, {ALLOWED_USER}"}
    host = start_devhost(env, tmp_path / "devhost.log")
    try:
        with httpx.Client(base_url=host.base_url, headers=host.headers, timeout=30) as client:

            def post(job_id: str, principal: str | None) -> httpx.Response:
                headers = {} if principal is None else {"X-MS-CLIENT-PRINCIPAL": principal}
                return client.post("/api/jobs", content=job(patch_users(1), job_id), headers=headers)

            refused = [
                post("anonymous", None),
                post("malformed", "e30"),  # "{}": no claims at all
                post("stranger", _principal(STRANGER, STRANGER)),
            ]
            listed_app = post("listed-app", _principal(ALLOWED_APP, STRANGER))
            listed_user = post("listed-user", _principal(STRANGER, ALLOWED_USER))
            status_refused = client.get("/api/jobs/listed-app")
            status_listed = client.get(
                "/api/jobs/listed-app", headers={"X-MS-CLIENT-PRINCIPAL": _principal(ALLOWED_APP, STRANGER)}
            )
    finally:
        host.stop()

    for answer in [*refused, status_refused]:
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["errors"][0]["field"] == "caller"
        assert STRANGER not in answer.text
    assert listed_app.status_code == listed_user.status_code == 202
    assert status_listed.status_code in {200, 202}
    assert set(all_partitions(app_env)) == {"listed-app", "listed-user"}
    log = host.log()
    assert "refused a caller not on ALLOWED_CALLER_IDS" in log
    assert host.key not in log
