"""The Power Automate connector: its definition passes the Swagger 2.0 validator and the
connector rules Power Platform certifies against, apiProperties has the Entra ID shape and no
secrets, the definition declares exactly the HTTP routes function_app.py has, and the served
copy is the file with the answering host."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from batching.connector import definition as connector
from batching.connector.actions import ActionName
from batching.settings import get_settings
from devhost.host import entries_of
from devhost.keys import auth_level
from tests.unit.helpers import fresh_function_app

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((ROOT / "connector" / "apiDefinition.swagger.json").read_text(encoding="utf-8"))
PROPERTIES = json.loads((ROOT / "connector" / "apiProperties.json").read_text(encoding="utf-8"))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")

# Swagger's formats plus Power Platform's own (`uuid`, never `guid`).
ALLOWED_FORMATS = frozenset(
    {
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "date",
        "date-time",
        "password",
        "date-no-tz",
        "email",
        "html",
        "uri",
        "uuid",
    }
)
# The OpenAPI extensions Power Platform documents for custom connectors.
KNOWN_EXTENSIONS = frozenset(
    {
        "x-ms-summary",
        "x-ms-visibility",
        "x-ms-api-annotation",
        "x-ms-operation-context",
        "x-ms-capabilities",
        "x-ms-trigger",
        "x-ms-trigger-hint",
        "x-ms-notification-content",
        "x-ms-notification-url",
        "x-ms-url-encoding",
        "x-ms-dynamic-values",
        "x-ms-dynamic-list",
        "x-ms-dynamic-schema",
        "x-ms-dynamic-properties",
        "x-ms-connector-metadata",
        "x-ms-pageable",
        "x-ms-no-generic-test",
        "x-ms-safe-operation",
        "x-ms-test-value",
        "x-ms-enum-values",
        "x-ms-media-kind",
        "x-ms-docs",
        # Swagger 2.0 has no `nullable`; tools read this vendor extension instead.
        "x-nullable",
    }
)
# The categories Power Platform offers for x-ms-connector-metadata.
CATEGORIES = frozenset(
    {
        "AI",
        "Business Management",
        "Business Intelligence",
        "Collaboration",
        "Commerce",
        "Communication",
        "Content and Files",
        "Finance",
        "Data",
        "Human Resources",
        "Internet of Things",
        "IT Operations",
        "Lifestyle and Entertainment",
        "Marketing",
        "Productivity",
        "Sales and CRM",
        "Security",
        "Social Media",
        "Website",
    }
)
# Words a sentence-case summary may still capitalise: names and abbreviations.
PROPER_WORDS = frozenset({"API", "ID", "IDs", "URL", "Graph", "Microsoft", "Entra", "Teams", "HTTP", "JSON"})
# Answers that carry no body: the host's 401 (empty, before the function runs).
EMPTY_ANSWERS = frozenset({"401", "204"})


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` to `#/definitions/...`, `#/parameters/...` or `#/responses/...`, followed."""
    while "$ref" in node:
        section, name = node["$ref"].removeprefix("#/").split("/")
        node = document[section][name]
    return node


def parameters(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, method, operation in operations(document):
        shared = document["paths"][path].get("parameters", [])
        for parameter in [*shared, *operation.get("parameters", [])]:
            yield f"{method.upper()} {path}", resolve(document, parameter)


def nodes(value: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in `value`, with its location."""
    if isinstance(value, dict):
        yield where, value
        for key, child in value.items():
            yield from nodes(child, f"{where}/{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from nodes(child, f"{where}/{index}")


def schema_properties(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of every schema in `definitions` (nested objects and array items too)."""

    def walk(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, prop in schema.get("properties", {}).items():
            yield f"{where}.{name}", prop
            yield from walk(prop, f"{where}.{name}")
        if isinstance(schema.get("items"), dict):
            yield from walk(schema["items"], f"{where}[]")

    for name, schema in document["definitions"].items():
        yield from walk(schema, name)


def is_sentence_case(text: str) -> bool:
    words = text.split()
    if not words or not words[0][:1].isupper():
        return False
    return all(not word[:1].isupper() or word in PROPER_WORDS for word in words[1:])


# --- the Swagger structure ---------------------------------------------------------------


def test_the_definition_is_valid_swagger_2_0_and_small_enough_to_import() -> None:
    assert DEFINITION["swagger"] == "2.0"  # Power Platform takes nothing else
    validate(DEFINITION)
    assert len(json.dumps(DEFINITION).encode()) < 1024 * 1024


@pytest.mark.parametrize(
    ("path", "method", "key", "value"),
    [
        ("/jobs", "post", "responses", None),  # an operation without answers
        ("/jobs/{jobId}", "get", "parameters", []),  # a path parameter not declared
        ("/jobs", "post", "operationId", "GetJobStatus"),  # an operationId twice
    ],
)
def test_the_validator_catches_a_broken_definition(path: str, method: str, key: str, value: Any) -> None:
    broken = json.loads(json.dumps(DEFINITION))
    operation = broken["paths"][path][method]
    if value is None:
        del operation[key]
    else:
        operation[key] = value
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


# --- the connector rules -----------------------------------------------------------------


def test_operation_ids_are_unique_and_pascal_case() -> None:
    ids = [operation["operationId"] for _, _, operation in operations(DEFINITION)]
    assert len(ids) == len({i.lower() for i in ids})
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", i) for i in ids), ids


def test_every_operation_has_a_sentence_case_summary_without_slash_and_a_description() -> None:
    for path, method, operation in operations(DEFINITION):
        summary = operation.get("summary", "")
        where = f"{method.upper()} {path}"
        assert 0 < len(summary) <= 80, where
        assert "/" not in summary, where
        assert not summary.endswith("."), where
        assert is_sentence_case(summary), f"{where}: {summary!r} is not sentence case"
        assert operation.get("description", "").strip(), where


def test_the_sentence_case_check_tells_title_case_apart() -> None:
    assert is_sentence_case("Run provisioning job")
    assert is_sentence_case("Get the API definition")
    assert not is_sentence_case("Run Provisioning Job")
    assert not is_sentence_case("run provisioning job")


def test_every_parameter_has_an_x_ms_summary_and_a_description() -> None:
    seen = 0
    for where, parameter in parameters(DEFINITION):
        seen += 1
        name = f"{where} {parameter['name']}"
        assert isinstance(parameter.get("x-ms-summary"), str), name
        assert parameter["x-ms-summary"].strip(), name
        assert isinstance(parameter.get("description"), str), name
        assert parameter["description"].strip(), name
    assert seen >= 2


def test_every_schema_property_has_a_title_and_a_description_so_it_shows_as_dynamic_content() -> None:
    for where, prop in schema_properties(DEFINITION):
        if "$ref" in prop:
            target = resolve(DEFINITION, prop)
            assert target.get("description"), where
            assert target.get("x-ms-summary"), where
            continue
        assert prop.get("description", "").strip(), where
        assert prop.get("x-ms-summary", "").strip(), where


def test_only_allowed_formats_are_used() -> None:
    used = {(at, node["format"]) for at, node in nodes(DEFINITION) if isinstance(node.get("format"), str)}
    assert used, "the definition declares formats (int32, uri)"
    assert {f for _, f in used} <= ALLOWED_FORMATS, sorted(used)


def test_only_documented_extensions_are_used() -> None:
    used = {key for _, node in nodes(DEFINITION) for key in node if key.startswith("x-")}
    assert used <= KNOWN_EXTENSIONS, sorted(used - KNOWN_EXTENSIONS)
    for where, node in nodes(DEFINITION):
        if "x-ms-visibility" in node:
            assert node["x-ms-visibility"] in {"important", "advanced", "internal"}, where


def test_every_answer_has_a_description_and_every_answer_with_a_body_a_schema() -> None:
    for path, method, operation in operations(DEFINITION):
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), f"{method} {path}"
        for code, response in responses.items():
            response = resolve(DEFINITION, response)
            where = f"{method.upper()} {path} {code}"
            assert response.get("description", "").strip(), where
            if code not in EMPTY_ANSWERS:
                assert "schema" in response, where


def test_long_running_answers_follow_the_async_pattern() -> None:
    """Power Automate polls a 202's Location, waiting Retry-After, until it gets a non-202."""
    for path, method, operation in operations(DEFINITION):
        accepted = operation["responses"].get("202")
        if accepted is None:
            continue
        headers = accepted.get("headers", {})
        where = f"{method.upper()} {path}"
        assert headers.get("Location", {}).get("format") == "uri", where
        assert headers.get("Retry-After", {}).get("type") == "integer", where
        assert "200" in operation["responses"], f"{where}: polling needs a final answer"


def test_job_answers_are_declared_as_the_api_gives_them() -> None:
    post = DEFINITION["paths"]["/jobs"]["post"]["responses"]
    get = DEFINITION["paths"]["/jobs/{jobId}"]["get"]["responses"]
    assert set(post) == {"200", "202", "400", "401", "403", "409", "413"}
    assert set(get) == {"200", "202", "400", "401", "403", "404"}
    for answers in (post, get):
        assert answers["200"]["schema"] == {"$ref": "#/definitions/JobResult"}
        assert answers["202"]["schema"] == {"$ref": "#/definitions/JobProgress"}
        for code in set(answers) - {"200", "202", "401"}:
            assert answers[code]["schema"] == {"$ref": "#/definitions/Problem"}, code


def test_info_has_a_contact_and_connector_metadata() -> None:
    info = DEFINITION["info"]
    contact = info.get("contact", {})
    assert contact.get("name")
    assert contact.get("url") or contact.get("email")
    assert 30 <= len(info["description"]) <= 500
    assert not re.search(r"\b(api|connector|power (automate|apps|platform)|copilot)\b", info["title"], re.I)
    metadata = {m["propertyName"]: m["propertyValue"] for m in DEFINITION.get("x-ms-connector-metadata", [])}
    assert set(metadata) >= {"Website", "Privacy policy", "Categories"}
    assert metadata["Website"].startswith("https://")
    assert metadata["Privacy policy"].startswith("https://")
    assert set(metadata["Categories"].split(";")) <= CATEGORIES


def test_the_file_keeps_a_placeholder_host_and_the_functions_route_prefix() -> None:
    assert DEFINITION["host"] == "your-function-app.azurewebsites.net"
    assert DEFINITION["basePath"] == connector.ROUTE_PREFIX
    assert DEFINITION["schemes"] == ["https"]


# --- the API and the definition never drift ----------------------------------------------


def test_the_definition_declares_exactly_the_http_routes_of_function_app_and_their_auth() -> None:
    declared: dict[str, set[str]] = {}
    anonymous: set[tuple[str, str]] = set()
    for entry in entries_of(fresh_function_app()):
        if entry.trigger["type"] != "httpTrigger":
            continue
        path = "/" + (entry.trigger.get("route") or entry.name)
        methods = {m.lower() for m in entry.trigger["methods"]}
        assert declared.setdefault(path, set()).isdisjoint(methods), path
        declared[path] |= methods
        if auth_level(entry.trigger) == "anonymous":
            anonymous |= {(path, m) for m in methods}

    defined = {path: {m for m in METHODS if m in item} for path, item in DEFINITION["paths"].items()}
    assert defined == declared
    # An anonymous route declares no security; every other one needs the sign-in (and the key).
    open_operations = {(p, m) for p, m, op in operations(DEFINITION) if op.get("security") == []}
    assert open_operations == anonymous
    assert ("/openapi.json", "get") in anonymous


def test_anonymous_routes_stay_open_when_entra_id_sign_in_is_on() -> None:
    """App Service authentication answers 401 before the function runs, except on
    `excludedPaths`: they must be exactly the anonymous routes."""
    bicep = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    block = re.search(r"excludedPaths: \[(.*?)\]", bicep, re.S)
    assert block is not None
    excluded = set(re.findall(r"'([^']+)'", block.group(1)))
    anonymous = {
        connector.ROUTE_PREFIX + "/" + entry.trigger["route"]
        for entry in entries_of(fresh_function_app())
        if entry.trigger["type"] == "httpTrigger" and auth_level(entry.trigger) == "anonymous"
    }
    assert excluded == anonymous


def test_path_parameters_match_the_route_template() -> None:
    for path, method, operation in operations(DEFINITION):
        names = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
        assert names == declared, f"{method.upper()} {path}"


def test_job_results_are_modelled_field_for_field_on_what_the_api_returns() -> None:
    from datetime import UTC, datetime

    from batching import http_api
    from batching.records import JobStatus, JobSummary, OperationRecord, OperationStatus
    from batching.service import JobView

    definitions = DEFINITION["definitions"]
    record = OperationRecord(
        op_id="create",
        status=OperationStatus.FAILED,
        method="POST",
        url="/users",
        attempts=2,
        seq=0,
        http_status=None,
        response_body='{"cut',
        response_body_truncated=True,
        error_code="x",
        error_message=None,
        graph_request_id=None,
        updated_at=datetime.now(UTC),
        note="a note",
    )
    every_field = set(record.to_json())
    result = definitions["OperationResult"]
    assert every_field == set(result["properties"])
    assert set(result["required"]) <= every_field
    assert set(result["properties"]["status"]["enum"]) == {s.value for s in OperationStatus}
    assert set(definitions["JobStatus"]["enum"]) == {s.value for s in JobStatus}
    assert set(definitions["Counts"]["properties"]) == {s.value.lower() for s in OperationStatus}
    assert set(definitions["OperationError"]["properties"]) == set(record.to_json()["error"])
    # Nullable in the API, nullable in the definition.
    for name in ("httpStatus", "graphRequestId"):
        assert result["properties"][name].get("x-nullable") is True, name
    assert "type" not in result["properties"]["body"]  # any JSON, or text when cut

    summary = JobSummary("job-1", 1, None, None, "http", reason="why", counts={OperationStatus.FAILED: 1})
    document = http_api._results(JobView(summary, [record]), "https://app/api/jobs/job-1")
    job_result = definitions["JobResult"]
    assert set(document) == set(job_result["properties"])
    assert set(job_result["required"]) == set(document) - {"reason"}
    assert document["correlationId"] is None
    assert job_result["properties"]["correlationId"].get("x-nullable") is True


def test_problem_answers_are_modelled_on_the_problem_document() -> None:
    from batching.errors import Problem, problem_document

    document = problem_document([Problem("jobId", "names no job")], title="No such job", status=404)
    problem = DEFINITION["definitions"]["Problem"]
    assert set(document) == set(problem["properties"]) == set(problem["required"])
    assert set(document["errors"][0]) == set(DEFINITION["definitions"]["FieldError"]["properties"])


def test_the_served_copy_is_the_file_with_the_answering_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        request = func.HttpRequest("GET", "https://prov-app.azurewebsites.net/api/openapi.json", body=b"")
        response = connector.definition_response(request)
    finally:
        get_settings.cache_clear()
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = json.loads(response.get_body())
    assert served["host"] == "prov-app.azurewebsites.net"
    assert served["schemes"] == ["https"]
    assert served["basePath"] == "/api"
    unchanged = {k: v for k, v in served.items() if k not in {"host", "schemes", "basePath"}}
    assert unchanged == {k: v for k, v in DEFINITION.items() if k not in {"host", "schemes", "basePath"}}
    validate(served)


def test_public_base_url_names_the_host_and_prefix_of_the_served_copy() -> None:
    served = connector.served_definition("http://worker:80/api/openapi.json", "https://gw.contoso.com/prov/")
    assert served["host"] == "gw.contoso.com"
    assert served["schemes"] == ["https"]
    assert served["basePath"] == "/prov/api"
    local = connector.served_definition("http://127.0.0.1:7071/api/openapi.json", None)
    assert (local["host"], local["schemes"], local["basePath"]) == ("127.0.0.1:7071", ["http"], "/api")


def test_the_definition_is_deployed_with_the_app() -> None:
    """The function reads the file at run time: .funcignore must not leave it out."""
    assert connector.DEFINITION_FILE == ROOT / "connector" / "apiDefinition.swagger.json"
    relative = connector.DEFINITION_FILE.relative_to(ROOT).as_posix()
    candidates = [relative, *(relative.rsplit("/", n)[0] for n in range(1, relative.count("/") + 1))]
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "negations: extend this check"
    ignored = [(p, c) for p in patterns for c in candidates if fnmatch.fnmatch(c, p.lstrip("/"))]
    assert ignored == []


# --- apiProperties.json ------------------------------------------------------------------


def test_api_properties_have_the_paconn_shape() -> None:
    assert set(PROPERTIES) == {"properties"}
    properties = PROPERTIES["properties"]
    allowed = {
        "iconBrandColor",
        "publisher",
        "stackOwner",
        "capabilities",
        "connectionParameters",
        "policyTemplateInstances",
    }
    assert set(properties) <= allowed
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", properties["iconBrandColor"])
    # paconn cannot update a connector whose apiProperties name a stackOwner.
    assert "stackOwner" not in properties
    for name in properties["connectionParameters"]:
        assert re.fullmatch(r"[0-9A-Za-z_]+(:[0-9A-Za-z_]+)?", name), name


def test_the_connection_signs_in_with_entra_id_for_the_api() -> None:
    parameters = PROPERTIES["properties"]["connectionParameters"]
    token = parameters["token"]
    assert token["type"] == "oauthSetting"
    settings = token["oAuthSettings"]
    assert settings["identityProvider"] == "aad"
    assert settings["clientId"]
    assert settings["properties"]["IsFirstParty"] == "False"
    custom = settings["customParameters"]
    resource = custom["resourceUri"]["value"]
    assert resource.startswith("api://")  # the API's application ID URI
    assert settings["properties"]["AzureActiveDirectoryResourceId"] == resource
    assert custom["loginUri"]["value"] == "https://login.microsoftonline.com"
    assert parameters["token:TenantId"] == {
        "type": "string",
        "metadata": {"sourceType": "AzureActiveDirectoryTenant"},
        "uiDefinition": {"constraints": {"required": "false", "hidden": "true"}},
    }
    # The definition asks for the same OAuth sign-in on every operation but the open one.
    schemes = DEFINITION["securityDefinitions"]
    assert [s["type"] for s in schemes.values()] == ["oauth2"]
    assert DEFINITION["security"] == [{name: []} for name in schemes]


def test_api_properties_hold_no_secret() -> None:
    for where, node in nodes(PROPERTIES):
        assert "clientSecret" not in node, where
        if node.get("type") == "securestring":
            assert "defaultValue" not in node, where
    text = json.dumps(PROPERTIES)
    assert not re.search(r"[A-Za-z0-9_\-]{40,}", text), "something that looks like a key"


def test_the_function_key_goes_with_every_call_from_a_connection_parameter() -> None:
    """Every route but the open one needs a function key: the connection asks for it and the
    connector adds it as x-functions-key, so no key sits in the definition."""
    properties = PROPERTIES["properties"]
    parameters = properties["connectionParameters"]
    assert parameters["functionKey"]["type"] == "securestring"
    headers = {
        p["parameters"]["x-ms-apimTemplateParameter.name"]: p["parameters"]
        for p in properties["policyTemplateInstances"]
        if p["templateId"] == "setheader"
    }
    key = headers["x-functions-key"]
    assert key["x-ms-apimTemplateParameter.value"] == "@connectionParameters('functionKey','')"
    assert "x-ms-apimTemplate-operationName" not in key  # every operation
    for instance in properties["policyTemplateInstances"]:
        for value in instance["parameters"].values():
            for name in re.findall(r"@connectionParameters\('([^']+)'", str(value)):
                assert name in parameters, name


# --- webhooks ------------------------------------------------------------------------------


def test_the_webhook_action_takes_the_flows_notification_url_and_declares_the_callback_body() -> None:
    """Power Automate fills the property marked x-ms-notification-url with the URL the flow
    waits on, and shows the path's x-ms-notification-content as the action's outputs."""
    item = DEFINITION["paths"]["/webhooks/jobs"]
    operation = item["post"]
    assert "x-ms-trigger" not in operation  # an action that waits, not a trigger
    [body] = [p for p in operation["parameters"] if p["in"] == "body"]
    schema = resolve(DEFINITION, body["schema"])
    marked = [
        name for name, prop in schema["properties"].items() if prop.get("x-ms-notification-url") is True
    ]
    assert marked == ["callbackUrl"]
    assert schema["properties"]["callbackUrl"]["x-ms-visibility"] == "internal"
    assert "callbackUrl" in schema["required"]
    # Everything else a job takes, the webhook action takes too.
    job = DEFINITION["definitions"]["JobSubmission"]["properties"]
    assert set(schema["properties"]) - {"callbackUrl"} == set(job) - {"callbackUrl"}
    # The callback POSTs the same results document the status route answers with 200.
    assert item["x-ms-notification-content"]["schema"] == {"$ref": "#/definitions/JobResult"}
    assert item["x-ms-notification-content"]["description"]


def test_subscribing_answers_201_with_the_unsubscribe_location_and_unsubscribing_is_internal() -> None:
    responses = DEFINITION["paths"]["/webhooks/jobs"]["post"]["responses"]
    assert set(responses) == {"201", "400", "401", "403", "409", "413"}
    assert responses["201"]["headers"]["Location"]["format"] == "uri"
    assert responses["201"]["schema"] == {"$ref": "#/definitions/JobProgress"}
    unsubscribe = DEFINITION["paths"]["/webhooks/jobs/{jobId}"]["delete"]
    assert unsubscribe["x-ms-visibility"] == "internal"  # Power Automate calls it, makers do not
    assert set(unsubscribe["responses"]) == {"204", "400", "401", "403", "404"}
    assert "schema" not in unsubscribe["responses"]["204"]


def test_the_trigger_takes_the_flows_notification_url_and_declares_the_job_it_posts() -> None:
    """A webhook trigger: x-ms-trigger single, a body property Power Automate fills with the
    flow's URL, the filters a maker picks, and the results document as its outputs."""
    item = DEFINITION["paths"]["/webhooks/subscriptions"]
    operation = item["post"]
    assert operation["x-ms-trigger"] == "single"
    assert operation["summary"] == "When a provisioning job finishes"
    [body] = [p for p in operation["parameters"] if p["in"] == "body"]
    schema = resolve(DEFINITION, body["schema"])
    marked = [
        name for name, prop in schema["properties"].items() if prop.get("x-ms-notification-url") is True
    ]
    assert marked == ["callbackUrl"]
    assert schema["properties"]["callbackUrl"]["x-ms-visibility"] == "internal"
    assert schema["required"] == ["callbackUrl"]
    assert set(schema["properties"]) == {"callbackUrl", "onlyWithFailures", "correlationIdPrefix", "action"}
    assert schema["properties"]["action"]["enum"] == [action.value for action in ActionName]
    assert item["x-ms-notification-content"]["schema"] == {"$ref": "#/definitions/JobResult"}
    assert item["x-ms-notification-content"]["description"]


def test_the_trigger_answers_201_with_the_unsubscribe_location_and_unsubscribing_is_internal() -> None:
    responses = DEFINITION["paths"]["/webhooks/subscriptions"]["post"]["responses"]
    assert set(responses) == {"201", "400", "401", "403", "413"}
    assert responses["201"]["headers"]["Location"]["format"] == "uri"
    info = resolve(DEFINITION, responses["201"]["schema"])
    assert "callbackUrl" not in info["properties"]  # a secret: never answered
    unsubscribe = DEFINITION["paths"]["/webhooks/subscriptions/{subscriptionId}"]["delete"]
    assert unsubscribe["x-ms-visibility"] == "internal"
    assert set(unsubscribe["responses"]) == {"204", "400", "401", "403", "404"}
    assert "schema" not in unsubscribe["responses"]["204"]
