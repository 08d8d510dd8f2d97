"""ALLOWED_CALLER_IDS: the signed-in caller App Service passes on, checked in the HTTP door."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any, cast

import azure.functions as func
import pytest
from pydantic import ValidationError

from batching import http_api
from batching.callers import Caller, allowed_ids, caller_allowed, read_principal
from batching.service import ProvisioningService
from batching.settings import Settings

APP = "11111111-aaaa-4bbb-8ccc-000000000001"  # a calling application's client id
SP = "22222222-aaaa-4bbb-8ccc-000000000002"  # that application's service principal (object id)
USER = "33333333-aaaa-4bbb-8ccc-000000000003"  # a user's object id
STRANGER = "44444444-aaaa-4bbb-8ccc-000000000004"
OID_URI = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def principal(*claims: tuple[str, str], **extra: Any) -> str:
    """An X-MS-CLIENT-PRINCIPAL value shaped as App Service sends it."""
    document = {
        "auth_typ": "aad",
        "claims": [{"typ": typ, "val": val} for typ, val in claims],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        **extra,
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_the_setting_is_a_list_of_ids_in_any_case_and_spacing() -> None:
    assert allowed_ids("") == frozenset()
    assert allowed_ids(f" {APP.upper()} ,{USER},") == {APP, USER}
    assert Settings(allowed_caller_ids=f"{APP}, {USER}").allowed_caller_ids  # valid
    for bad in ("not-a-guid", f"{APP};{USER}", f"{APP},,{USER}", f"{APP}{USER}"):
        with pytest.raises(ValidationError):
            Settings(allowed_caller_ids=bad)


def test_the_principal_gives_the_application_and_object_ids() -> None:
    v1 = principal(("appid", APP), (OID_URI, SP), ("aud", "api://x"), ("ver", "1.0"))
    assert read_principal(v1) == Caller(frozenset({APP}), frozenset({SP}))
    v2 = principal(("azp", APP.upper()), ("oid", USER), ("name", "Ada"))
    assert read_principal(v2) == Caller(frozenset({APP}), frozenset({USER}))
    # base64 without its padding is read as well
    assert read_principal(v1.rstrip("=")) == read_principal(v1)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "not base64 !",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"\xff\xfe\x00").decode(),
        base64.b64encode(b"[]").decode(),
        base64.b64encode(b'{"claims": {}}').decode(),
        base64.b64encode(b'{"claims": [1]}').decode(),
        base64.b64encode(b'{"claims": [{"typ": "appid", "val": 1}]}').decode(),
        base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()[:60_000],
        base64.b64encode(b'{"claims": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}").decode(),
        "A" * 70_000,
    ],
)
def test_a_missing_or_malformed_principal_names_no_caller(header: str | None) -> None:
    assert read_principal(header) is None
    assert not caller_allowed(frozenset({APP}), header)


def test_a_caller_is_allowed_when_any_of_its_ids_is_listed() -> None:
    daemon = principal(("appid", APP), (OID_URI, SP))
    user_via_app = principal(("azp", APP), ("oid", USER))
    assert caller_allowed(frozenset(), None)  # no list: no restriction
    assert caller_allowed(frozenset({APP}), daemon)
    assert caller_allowed(frozenset({SP}), daemon)
    assert caller_allowed(frozenset({USER}), user_via_app)
    assert caller_allowed(frozenset({APP}), user_via_app)
    assert not caller_allowed(frozenset({STRANGER}), daemon)
    assert not caller_allowed(frozenset({USER}), daemon)
    # an id in another claim (the audience, a name, a tenant) does not count
    other_claims = principal(("aud", APP), ("tid", APP), ("name", APP), ("appid", STRANGER))
    assert not caller_allowed(frozenset({APP}), other_claims)
    assert not caller_allowed(frozenset({APP}), principal())


def _service(allowed: str) -> ProvisioningService:
    """Enough of a service for a refused request: settings only (the refusal reads nothing else)."""
    return cast(ProvisioningService, SimpleNamespace(settings=Settings(allowed_caller_ids=allowed)))


def _request(method: str, headers: dict[str, str], body: bytes = b"{}") -> func.HttpRequest:
    return func.HttpRequest(
        method,
        "https://app.example/api/jobs/job-1",
        headers=headers,
        body=body,
        route_params={"jobId": "job-1"},
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-MS-CLIENT-PRINCIPAL": "bm90IGpzb24="},
        {"X-MS-CLIENT-PRINCIPAL": principal(("appid", STRANGER), ("oid", "<script>"))},
    ],
)
async def test_the_http_door_refuses_a_caller_not_on_the_list_with_403_problem_json(
    headers: dict[str, str],
) -> None:
    service = _service(f"{APP},{USER}")
    for answer in (
        await http_api.post_job(_request("POST", headers, b'{"operations": "<script>"}'), service),
        await http_api.get_job(_request("GET", headers), service),
    ):
        assert answer.status_code == 403
        assert answer.mimetype == "application/problem+json"
        problem = json.loads(answer.get_body())
        assert problem["status"] == 403
        assert problem["errors"] == [
            {"field": "caller", "message": "is not on the list of allowed applications and identities"}
        ]
        text = answer.get_body().decode()
        assert STRANGER not in text
        assert "script" not in text
