"""The served definition against the live dev host, by property-based testing (schemathesis):
every operation the definition declares, with inputs generated from it, answers without a
server error, with a declared status, content type and headers, and a body that conforms to
the declared schema. The definition is read from the host (`GET /api/openapi.json`, the file
the connector is imported from), so operations added to it are covered without a change here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devhost.keys import KEY_HEADER, KEY_SETTING, new_key
from devhost.stack import Azurite, DevHost, ServedEmulator, start_devhost

# Per operation; with a dozen operations the whole run takes well under a minute.
EXAMPLES = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def conformance_host(
    azurite: Azurite, served_emulator: ServedEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevHost]:
    """One dev host for every generated case (its own queues and tables), so the emulator's
    tenant and the app's storage see the work the cases submit."""
    served_emulator.emulator.reset()
    served_emulator.emulator.tenant.seed_users(5)
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "PROVISIONING_QUEUE": f"prov-{suffix}",
        "WORK_QUEUE": f"provwork-{suffix}",
        "BULK_QUEUE": f"provbulk-{suffix}",
        "CALLBACK_QUEUE": f"provcallbacks-{suffix}",
        "RESULTS_TABLE": f"Results{suffix}",
        "SUBSCRIPTIONS_TABLE": f"Subscriptions{suffix}",
        "PACING_TABLE": f"Pacing{suffix}",
        "BULK_CONTAINER": f"bulk-{suffix}",
        "BULK_SCHEDULE": "0 0 0 1 1 *",
        "GRAPH_BASE_URL": served_emulator.base_url,
        "GRAPH_CREDENTIAL": "emulator",
        "GRAPH_WRITES_PER_SECOND": "1000",
        "GRAPH_READ_UNITS_PER_SECOND": "10000",
        "STATUS_RETRY_AFTER_SECONDS": "1",
        "CALLBACK_ALLOWED_HOSTS": "default,127.0.0.1",
        KEY_SETTING: new_key(),
    }
    log = tmp_path_factory.mktemp("conformance") / "devhost.log"
    host = start_devhost(env, log)
    try:
        yield host
    finally:
        host.stop()
        print(host.log()[-4000:])


@pytest.fixture(scope="module")
def served_definition(conformance_host: DevHost) -> dict[str, Any]:
    response = httpx.get(f"{conformance_host.base_url}/api/openapi.json", timeout=30)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def served_schema(served_definition: dict[str, Any]) -> schemathesis.BaseSchema:
    """The served document as it is: its host, scheme and base path say where to call."""
    schema = schemathesis.openapi.from_dict(served_definition)
    base = f"{served_definition['schemes'][0]}://{served_definition['host']}{served_definition['basePath']}"
    schema.config.update(base_url=base)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE], max_examples=EXAMPLES, deterministic=True
    )
    return schema


schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_declared_operation_answers_as_declared(
    case: schemathesis.Case[Any], conformance_host: DevHost
) -> None:
    case.call_and_validate(headers={KEY_HEADER: conformance_host.key}, checks=CHECKS, timeout=30)


def test_known_good_calls_answer_as_declared(
    served_schema: schemathesis.BaseSchema, conformance_host: DevHost
) -> None:
    """Generated inputs are mostly refused (400); these reach the other answers: 202 while a
    job runs, 200 with its results, 201 for a subscription, 204 to unsubscribe, 404."""
    headers = {KEY_HEADER: conformance_host.key}

    def call(path: str, method: str, **kwargs: Any) -> schemathesis.Response:
        case = served_schema[path][method].Case(**kwargs)
        return case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    job = {
        "jobId": "known-good",
        "operations": [
            {"id": "t", "method": "PATCH", "url": "/users/user1@contoso.com", "body": {"jobTitle": "x"}}
        ],
    }
    assert call("/jobs", "POST", body=job).status_code == 202
    deadline = time.monotonic() + 30
    while (
        answer := call("/jobs/{jobId}", "GET", path_parameters={"jobId": "known-good"})
    ).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert answer.status_code == 200
    assert call("/jobs/{jobId}", "GET", path_parameters={"jobId": "no-such-job"}).status_code == 404

    hook = {**job, "jobId": "known-hook", "callbackUrl": "http://127.0.0.1:9/hook?sig=x"}
    assert call("/webhooks/jobs", "POST", body=hook).status_code == 201
    assert (
        call("/webhooks/jobs/{jobId}", "DELETE", path_parameters={"jobId": "known-hook"}).status_code == 204
    )
    assert (
        call("/webhooks/jobs/{jobId}", "DELETE", path_parameters={"jobId": "no-such-job"}).status_code == 404
    )
    assert call("/jobs", "POST", body={**job, "operations": []}).status_code == 400


def test_the_webhook_routes_give_each_declared_answer_as_declared(
    served_schema: schemathesis.BaseSchema, conformance_host: DevHost
) -> None:
    """Each status the webhook pair declares is one the host really gives, in the declared
    shape (403 needs Entra ID sign-in: tests/integration/test_http_auth.py)."""
    key = {KEY_HEADER: conformance_host.key}

    def call(path: str, method: str, headers: dict[str, str], **kwargs: Any) -> int:
        case = served_schema[path][method].Case(**kwargs)
        response = case.call(headers=headers, timeout=30)
        if response.status_code == 401:  # the host's, before the function: declared without a body
            assert response.content == b""
            case.validate_response(response, checks=[c for c in CHECKS if c is not content_type_conformance])
        else:
            case.validate_response(response, checks=CHECKS)
        return int(response.status_code)

    hook = {
        "jobId": "declared-hook",
        "callbackUrl": "http://127.0.0.1:9/hook?sig=x",
        "operations": [{"id": "t", "method": "GET", "url": "/users"}],
    }
    seen_post = {
        call("/webhooks/jobs", "POST", key, body=hook),
        call("/webhooks/jobs", "POST", key, body={**hook, "callbackUrl": "https://elsewhere.example/x"}),
        call("/webhooks/jobs", "POST", {}, body=hook),
        call(
            "/webhooks/jobs",
            "POST",
            key,
            body={**hook, "operations": [{"id": "u", "method": "GET", "url": "/groups"}]},
        ),
        call("/webhooks/jobs", "POST", key, body={**hook, "correlationId": "x" * 5_000_000}),
    }
    declared = served_schema["/webhooks/jobs"]["POST"].definition.raw["responses"]
    assert {str(status) for status in seen_post} == set(declared) - {"403"}

    seen_delete = {
        call("/webhooks/jobs/{jobId}", "DELETE", key, path_parameters={"jobId": "declared-hook"}),
        call("/webhooks/jobs/{jobId}", "DELETE", key, path_parameters={"jobId": "not a job id!"}),
        call("/webhooks/jobs/{jobId}", "DELETE", {}, path_parameters={"jobId": "declared-hook"}),
        call("/webhooks/jobs/{jobId}", "DELETE", key, path_parameters={"jobId": "no-such-job"}),
    }
    declared = served_schema["/webhooks/jobs/{jobId}"]["DELETE"].definition.raw["responses"]
    assert {str(status) for status in seen_delete} == set(declared) - {"403"}


def test_the_trigger_routes_give_each_declared_answer_as_declared(
    served_schema: schemathesis.BaseSchema, conformance_host: DevHost
) -> None:
    """Each status the trigger's subscribe and unsubscribe declare is one the host really gives,
    in the declared shape (403 needs Entra ID sign-in: tests/integration/test_http_auth.py)."""
    key = {KEY_HEADER: conformance_host.key}

    def call(path: str, method: str, headers: dict[str, str], **kwargs: Any) -> tuple[int, Any]:
        case = served_schema[path][method].Case(**kwargs)
        response = case.call(headers=headers, timeout=30)
        if response.status_code == 401:  # the host's, before the function: declared without a body
            assert response.content == b""
            case.validate_response(response, checks=[c for c in CHECKS if c is not content_type_conformance])
        else:
            case.validate_response(response, checks=CHECKS)
        return int(response.status_code), response

    subscription = {"callbackUrl": "http://127.0.0.1:9/trigger?sig=x", "action": "createUsers"}
    made, answer = call("/webhooks/subscriptions", "POST", key, body=subscription)
    seen_post = {
        made,
        call("/webhooks/subscriptions", "POST", key, body={"callbackUrl": "https://elsewhere.example/x"})[0],
        call("/webhooks/subscriptions", "POST", {}, body=subscription)[0],
        call(
            "/webhooks/subscriptions",
            "POST",
            key,
            body={**subscription, "correlationIdPrefix": "x" * 5_000_000},
        )[0],
    }
    declared = served_schema["/webhooks/subscriptions"]["POST"].definition.raw["responses"]
    assert {str(status) for status in seen_post} == set(declared) - {"403"}

    sub_id = answer.json()["subscriptionId"]
    path = "/webhooks/subscriptions/{subscriptionId}"
    seen_delete = {
        call(path, "DELETE", key, path_parameters={"subscriptionId": sub_id})[0],
        call(path, "DELETE", key, path_parameters={"subscriptionId": "not an id!"})[0],
        call(path, "DELETE", {}, path_parameters={"subscriptionId": sub_id})[0],
        call(path, "DELETE", key, path_parameters={"subscriptionId": sub_id})[0],  # gone now: 404
    }
    declared = served_schema[path]["DELETE"].definition.raw["responses"]
    assert {str(status) for status in seen_delete} == set(declared) - {"403"}


def test_the_run_covers_every_operation_the_served_definition_declares(
    served_schema: schemathesis.BaseSchema, served_definition: dict[str, Any]
) -> None:
    """Nothing declared is left out of the run (the rules test holds the file to the host's
    routes; this holds the run to the file)."""
    operations = [result.ok() for result in served_schema.get_all_operations()]  # type: ignore[union-attr]
    run = {(operation.method.lower(), operation.path) for operation in operations}
    declared = {
        (method, path)
        for path, item in served_definition["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }
    assert run == declared
    assert {("post", "/jobs"), ("post", "/webhooks/jobs"), ("delete", "/webhooks/jobs/{jobId}")} <= run
    assert {
        ("post", "/webhooks/subscriptions"),
        ("delete", "/webhooks/subscriptions/{subscriptionId}"),
    } <= run
