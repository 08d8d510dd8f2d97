"""The Bicep and azd configuration, checked offline: every combination of parameters azd can
produce is rendered (tests/unit/bicep_render.py) and held to what a first `azd up` in any Flex
Consumption region needs; checkov passes; the template agrees with the code.

checkov runs once, on the template: its Bicep runner takes no parameter file (it reads the
defaults) and checks every resource whatever its condition, so one run covers every resource any
combination creates. What differs between combinations is asserted here on the rendered result.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from batching.settings import Settings, setting_names
from tests.unit.bicep_render import (
    IAC_PYTHON,
    DeploymentRefused,
    RenderedResource,
    Template,
    load_asts,
    misparsed_expressions,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings that stay unset in Azure: the connection string (storage is keyless there),
# optional explicit service URIs, and the optional public base URL.
NOT_IN_AZURE = {
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__blobServiceUri",
    "PUBLIC_BASE_URL",
}
# Read by the Functions host itself, not by the app's settings object.
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# siteConfig properties Flex Consumption sites refuse with error 51021 (ftpsState in newer
# regions; the runtime stack, scale and worker properties everywhere): runtime and scale belong
# in functionAppConfig.
FLEX_REJECTED_SITE_CONFIG = {
    "alwaysOn",
    "ftpsState",
    "functionAppScaleLimit",
    "functionsRuntimeScaleMonitoringEnabled",
    "javaContainer",
    "javaContainerVersion",
    "javaVersion",
    "linuxFxVersion",
    "netFrameworkVersion",
    "nodeVersion",
    "phpVersion",
    "powerShellVersion",
    "preWarmedInstanceCount",
    "pythonVersion",
    "use32BitWorkerProcess",
    "windowsFxVersion",
}
FLEX_REJECTED_SITE_PROPERTIES = {"containerSize", "dailyMemoryTimeQuota"}
# App settings Microsoft lists as deprecated on Flex Consumption ("Flex Consumption plan
# deprecations"): their job moved to functionAppConfig or is done by the platform.
FLEX_REJECTED_APP_SETTINGS = {
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "ENABLE_ORYX_BUILD",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
}
ROLE = {
    "blob data contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "blob data owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "queue data contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "queue data message sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "table data contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "table data reader": "76199698-9eea-4c19-bc75-cec21354c6b6",
    "monitoring reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
}
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
ACCOUNTS = "Microsoft.Storage/storageAccounts"
TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"
QUEUES = "Microsoft.Storage/storageAccounts/queueServices/queues"

# What azd always provides, and every variable the parameters file reads with the values a
# person could give it: unset (absent from the azd environment) or set, messy spacing included.
AZD_BASE = {"AZURE_ENV_NAME": "prod", "AZURE_LOCATION": "swedencentral"}
AZD_CHOICES: dict[str, tuple[str | None, ...]] = {
    "MAXIMUM_INSTANCE_COUNT": (None, "40"),
    "ZONE_REDUNDANT": (None, "true"),
    "ENABLE_ENTRA_AUTH": (None, "true"),
    "AUTH_CLIENT_ID": (None, "11111111-aaaa-4aaa-8aaa-111111111111"),
    "AUTH_ALLOWED_AUDIENCES": (None, " api://provisioning , https://contoso.example/provisioning,"),
    "ALLOWED_CALLER_APP_IDS": (None, "connector-app, daemon-app"),
    "ALLOWED_CALLER_OBJECT_IDS": (None, "flow-owner"),
    "PRODUCER_PRINCIPAL_IDS": (None, "hr-system,erp-system"),
    "AZURE_PRINCIPAL_ID": ("", "deployer"),
    "GRANT_DEPLOYER_OPERATOR_ROLES": (None, "false"),
    "OPERATOR_PRINCIPAL_IDS": (None, "ops-group, deployer"),
}


@cache
def _template() -> Template:
    return Template(load_asts(BICEP_FILES))


def _ids(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def azd_parameters(env: Mapping[str, str]) -> dict[str, Any]:
    """main.parameters.json as azd resolves it: `${NAME}` / `${NAME=default}` substituted, a
    parameter left out when its variable is unset and the result empty, strings converted to
    the parameter's type as azd converts them (Go's ParseBool / ParseInt)."""
    file = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    types = {name: spec["type"] for name, spec in _template().parameters().items()}
    resolved: dict[str, Any] = {}
    for name, entry in file.items():
        unset = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal unset
            variable, default = match.group(1), match.group(3)
            if variable in env:
                return env[variable]
            unset = True
            return default or ""

        value = re.sub(r"\$\{(\w+)(=([^}]*))?\}", substitute, entry["value"])
        if value == "" and (unset or types[name] == "string"):
            continue  # azd omits it (or passes nothing): the Bicep default applies
        if types[name] == "bool":
            parsed = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
            if value.lower() not in parsed:
                raise DeploymentRefused(f"azd asks again for {name}: {value!r} is not a bool")
            resolved[name] = parsed[value.lower()]
        elif types[name] == "int":
            if not re.fullmatch(r"[+-]?\d+", value):
                raise DeploymentRefused(f"azd asks again for {name}: {value!r} is not a number")
            resolved[name] = int(value)
        else:
            resolved[name] = value
    return resolved


def _render(env: Mapping[str, str]) -> list[RenderedResource] | DeploymentRefused:
    try:
        return _template().render(azd_parameters(env))
    except DeploymentRefused as refusal:
        return refusal


@cache
def _every_combination() -> list[tuple[dict[str, str], list[RenderedResource] | DeploymentRefused]]:
    names = list(AZD_CHOICES)
    rendered = []
    for values in itertools.product(*(AZD_CHOICES[name] for name in names)):
        env = {**AZD_BASE, **{n: v for n, v in zip(names, values, strict=True) if v is not None}}
        rendered.append((env, _render(env)))
    return rendered


def _deployed() -> list[tuple[dict[str, str], list[RenderedResource]]]:
    return [(env, result) for env, result in _every_combination() if isinstance(result, list)]


def _one(resources: list[RenderedResource], type_: str, symbol: str | None = None) -> RenderedResource:
    found = [r for r in resources if r.type == type_ and not r.existing and symbol in (None, r.symbol)]
    assert len(found) == 1, [r.symbol for r in found]
    return found[0]


def _app_settings(resources: list[RenderedResource]) -> dict[str, Any]:
    site = _one(resources, "Microsoft.Web/sites")
    return {s["name"]: s["value"] for s in site.properties["siteConfig"]["appSettings"]}


def _role_assignments(resources: list[RenderedResource]) -> list[RenderedResource]:
    return [r for r in resources if r.type == "Microsoft.Authorization/roleAssignments"]


def _grants(resources: list[RenderedResource], principal: str) -> set[tuple[str, str, str]]:
    """(role definition id, scope type, scope name) of every role `principal` gets."""
    return {
        (
            r.properties["roleDefinitionId"].rsplit("/", 1)[-1],
            r.body["scope"].type,
            r.body["scope"].name.rsplit("/", 1)[-1],
        )
        for r in _role_assignments(resources)
        if str(r.properties["principalId"]) == principal
    }


def _defaults() -> list[RenderedResource]:
    result = _render({**AZD_BASE, "AZURE_PRINCIPAL_ID": "deployer"})
    assert isinstance(result, list), result
    return result


# --- the offline tools ----------------------------------------------------------------------


def test_every_bicep_file_parses_with_pycep_0_7_1() -> None:
    assert BICEP_FILES, "no .bicep files found"
    version = subprocess.run(
        [str(IAC_PYTHON), "-c", "import importlib.metadata as m; print(m.version('pycep-parser'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.stdout.strip() == "0.7.1", version.stderr[-2000:]
    assert set(_template().asts) == {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}


def test_checkov_runs_checks_and_finds_nothing() -> None:
    result = subprocess.run(
        [
            str(IAC_PYTHON),
            "-m",
            "checkov.main",
            "-d",
            str(INFRA),
            "--framework",
            "bicep",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = (report[0] if isinstance(report, list) else report)["summary"]
    assert summary["parsing_errors"] == 0, result.stderr[-3000:]
    assert summary["passed"] > 0
    assert summary["failed"] == 0, result.stdout[-5000:]


def test_every_skipped_check_says_why() -> None:
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV\w+: \S.{10,}", line), f"{path.name}: {line.strip()}"


def test_no_skip_claims_flex_lacks_zone_redundancy() -> None:
    """Flex Consumption supports zone redundancy; the honest reason to leave it off is its cost."""
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=CKV_AZURE_225" in line:
                assert not re.search(r"not (offered|supported|available)", line), line.strip()
                assert "cost" in line


def test_every_compound_expression_is_parenthesised_for_the_offline_parser() -> None:
    """pycep-parser gives every operator the same precedence; unparenthesised compound
    expressions would be checked (by checkov and by the renderer) with another meaning."""
    assert misparsed_expressions(_template().asts) == []


# --- azd ------------------------------------------------------------------------------------


def _azure_yaml() -> str:
    return (ROOT / "azure.yaml").read_text()


def test_azd_requires_a_version_with_python_hooks_and_a_recent_bicep() -> None:
    required = re.search(
        r'^requiredVersions:\n  azd: ">=\s*(\d+)\.(\d+)\.(\d+)"$', _azure_yaml(), re.MULTILINE
    )
    assert required, "azure.yaml: requiredVersions.azd"
    assert tuple(map(int, required.groups())) >= (1, 24, 0)  # Python hooks; Bicep 0.42 (fail())
    assert re.search(
        r"^  api:\n    project: \.\n    language: python\n    host: function$", _azure_yaml(), re.M
    )
    assert _one(_defaults(), "Microsoft.Web/sites").body["tags"]["'azd-service-name'"] == "api"


def test_the_graph_grant_hook_runs_after_every_provision() -> None:
    hook = re.search(r"^hooks:\n(?:  #.*\n)*  postprovision:\n((?:    .*\n)+)", _azure_yaml(), re.MULTILINE)
    assert hook, "azure.yaml: hooks.postprovision"
    fields = dict(re.findall(r"^    (\w+): (\S+)$", hook.group(1), re.MULTILINE))
    script = ROOT / fields["run"]
    assert fields["kind"] == "python"
    assert script.is_file()
    assert "continueOnError" not in fields  # a failed grant stops azd up with the hook's message
    requirements = (script.parent / "requirements.txt").read_text()
    assert "-r ../../requirements.txt" in requirements.splitlines()


def test_graph_permissions_are_not_granted_in_bicep() -> None:
    """Grants to an identity made in the same deployment fail while it replicates, and repeating
    an existing one can fail too: the hook grants them, idempotently and with retries."""
    for path in BICEP_FILES:
        text = path.read_text()
        assert "Microsoft.Graph/" not in text, path.name
        assert "extension microsoftGraph" not in text, path.name
    assert (
        not (ROOT / "bicepconfig.json").exists()
        or "microsoftGraph" not in (ROOT / "bicepconfig.json").read_text()
    )


def test_parameters_file_uses_only_azd_substitutions_for_real_parameters() -> None:
    file = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = _template().parameters()
    for name, entry in file.items():
        assert name in declared, name
        assert re.fullmatch(r"\$\{\w+(=[^}]*)?\}", entry["value"]), entry
    required = {name for name, spec in declared.items() if spec.get("default") is None}
    assert required <= set(file)
    assert file["location"]["value"] == "${AZURE_LOCATION}"
    assert file["deployerPrincipalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    mapped = {re.sub(r"^\$\{(\w+).*$", r"\1", entry["value"]) for entry in file.values()}
    assert set(AZD_CHOICES) | set(AZD_BASE) == mapped - {"INSTANCE_MEMORY_MB"}


def test_location_is_limited_to_flex_consumption_regions_and_azd_offers_only_those() -> None:
    location = _template().parameters()["location"]
    decorators = {d["type"]: d.get("argument") for d in location["decorators"]}
    allowed = decorators["allowed"]
    assert len(allowed) >= 20
    assert all(re.fullmatch(r"[a-z0-9]+", region) for region in allowed)
    assert "eastus2euap" not in allowed  # early-access region, not open to every subscription
    assert decorators["metadata"] == {"azd": {"type": "location"}}
    for region in ("westeurope", "eastus2", "swedencentral"):
        assert isinstance(_render({**AZD_BASE, "AZURE_LOCATION": region}), list)
    for region in ("brazilsoutheast", "westindia", "chinanorth3"):
        assert isinstance(_render({**AZD_BASE, "AZURE_LOCATION": region}), DeploymentRefused)


def test_maximum_instance_count_defaults_and_holds_to_the_flex_minimum() -> None:
    spec = _template().parameters()["maximumInstanceCount"]
    decorators = {d["type"]: d.get("argument") for d in spec["decorators"]}
    assert 40 <= spec["default"] <= 1000
    assert decorators["min_value"] >= 40
    assert decorators["max_value"] <= 1000
    for too_low in ("1", "10", "39"):
        assert isinstance(_render({**AZD_BASE, "MAXIMUM_INSTANCE_COUNT": too_low}), DeploymentRefused)
    assert isinstance(_render({**AZD_BASE, "MAXIMUM_INSTANCE_COUNT": "1000"}), list)


# --- every combination azd can produce ------------------------------------------------------


def test_every_combination_deploys_unless_entra_sign_in_would_be_open_or_unnamed() -> None:
    combinations = _every_combination()
    assert len(combinations) == 2 ** len(AZD_CHOICES)
    for env, result in combinations:
        auth_on = env.get("ENABLE_ENTRA_AUTH") == "true"
        no_client = "AUTH_CLIENT_ID" not in env
        no_callers = "ALLOWED_CALLER_APP_IDS" not in env and "ALLOWED_CALLER_OBJECT_IDS" not in env
        if auth_on and no_client:
            assert isinstance(result, DeploymentRefused), env
            assert "AUTH_CLIENT_ID" in str(result)
        elif auth_on and no_callers:
            assert isinstance(result, DeploymentRefused), env
            assert "ALLOWED_CALLER_APP_IDS or ALLOWED_CALLER_OBJECT_IDS" in str(result)
        else:
            assert isinstance(result, list), (env, result)


def test_entra_sign_in_accepts_the_api_audience_and_only_the_named_callers() -> None:
    for env, resources in _deployed():
        auth = [r for r in resources if r.type == "Microsoft.Web/sites/config"]
        settings = _app_settings(resources)
        if env.get("ENABLE_ENTRA_AUTH") != "true":
            assert auth == [], env
            assert settings["ALLOWED_CALLER_IDS"] == ""
            continue
        (config,) = auth
        assert config.body["name"] == "authsettingsV2"
        aad = config.properties["identityProviders"]["azureActiveDirectory"]
        client_id = env["AUTH_CLIENT_ID"]
        assert aad["registration"]["clientId"] == client_id
        expected_audiences = _ids(env.get("AUTH_ALLOWED_AUDIENCES")) or [f"api://{client_id}", client_id]
        assert aad["validation"]["allowedAudiences"] == expected_audiences, env
        policy = aad["validation"]["defaultAuthorizationPolicy"]
        apps, objects = _ids(env.get("ALLOWED_CALLER_APP_IDS")), _ids(env.get("ALLOWED_CALLER_OBJECT_IDS"))
        assert policy["allowedApplications"] == apps
        assert policy["allowedPrincipals"]["identities"] == objects
        assert apps or objects
        assert settings["ALLOWED_CALLER_IDS"] == ",".join(apps + objects)
        assert config.properties["globalValidation"]["unauthenticatedClientAction"] == "Return401"


def test_the_site_holds_nothing_flex_consumption_rejects() -> None:
    for env, resources in _deployed():
        site = _one(resources, "Microsoft.Web/sites")
        assert not set(site.properties["siteConfig"]) & FLEX_REJECTED_SITE_CONFIG, env
        assert not set(site.properties) & FLEX_REJECTED_SITE_PROPERTIES
        assert not set(_app_settings(resources)) & (FLEX_REJECTED_APP_SETTINGS | {"AzureWebJobsStorage"})
        config = site.properties["functionAppConfig"]
        assert config["runtime"] == {"name": "python", "version": "3.11"}
        assert 40 <= config["scaleAndConcurrency"]["maximumInstanceCount"] <= 1000
        assert _one(resources, "Microsoft.Web/serverfarms").body["sku"] == {
            "tier": "FlexConsumption",
            "name": "FC1",
        }


def test_zone_redundancy_is_optional_and_covers_the_plan_and_its_storage() -> None:
    for env, resources in _deployed():
        zone_redundant = env.get("ZONE_REDUNDANT") == "true"
        assert _one(resources, "Microsoft.Web/serverfarms").properties["zoneRedundant"] is zone_redundant
        sku = _one(resources, ACCOUNTS).body["sku"]["name"]
        assert sku == ("Standard_ZRS" if zone_redundant else "Standard_LRS"), env


def test_operators_get_the_data_roles_the_cli_needs_and_nothing_else() -> None:
    """Blob contributor on the bulk container (never the deployment package: that is code run
    with the app's Graph permissions), queue contributor on the account, table contributor on
    the results and pacing tables (never the subscriptions table: its callback URLs are
    secrets that start flows), and
    Monitoring Reader on the app's telemetry and its workbook (README "Operating")."""
    operator_roles = {
        (ROLE["blob data contributor"], CONTAINERS, "bulk-user-updates"),
        (ROLE["queue data contributor"], ACCOUNTS, "<storage.outputs.name>"),
        (ROLE["table data contributor"], TABLES, Settings().results_table),
        (ROLE["table data contributor"], TABLES, Settings().pacing_table),
        (ROLE["monitoring reader"], "Microsoft.Insights/components", "<monitoring.outputs.appInsightsName>"),
        (ROLE["monitoring reader"], "Microsoft.Insights/workbooks", "<operationsWorkbook.outputs.name>"),
    }
    for env, resources in _deployed():
        operators = set(_ids(env.get("OPERATOR_PRINCIPAL_IDS")))
        if env["AZURE_PRINCIPAL_ID"] and env.get("GRANT_DEPLOYER_OPERATOR_ROLES") != "false":
            operators.add(env["AZURE_PRINCIPAL_ID"])
        people = {str(r.properties["principalId"]) for r in _role_assignments(resources)} - {
            "<identity.outputs.principalId>"
        }
        assert people - set(_ids(env.get("PRODUCER_PRINCIPAL_IDS"))) == operators, env
        for operator in operators:
            assert _grants(resources, operator) == operator_roles, (env, operator)


def test_only_the_app_identity_can_read_the_subscriptions_table() -> None:
    """The trigger's callback URLs start flows: no table role on the account or on that table
    goes to anyone but the app's identity, in any combination of settings."""
    table_roles = {ROLE["table data contributor"], ROLE["table data reader"]}
    for env, resources in _deployed():
        for assignment in _role_assignments(resources):
            role = str(assignment.properties["roleDefinitionId"])
            if not any(role_id in role for role_id in table_roles):
                continue
            scope = assignment.body["scope"]
            reaches = (
                scope.type == ACCOUNTS or scope.name.rsplit("/", 1)[-1] == Settings().subscriptions_table
            )
            if reaches:
                assert str(assignment.properties["principalId"]) == "<identity.outputs.principalId>", env


def test_producers_may_only_send_to_the_public_queue() -> None:
    """Only the app writes its work and bulk queues: producers get Storage Queue Data Message
    Sender scoped to the provisioning queue, and no other role anywhere."""
    for env, resources in _deployed():
        for producer in _ids(env.get("PRODUCER_PRINCIPAL_IDS")):
            assert _grants(resources, producer) == {
                (ROLE["queue data message sender"], QUEUES, Settings().provisioning_queue)
            }


def test_every_role_assignment_has_its_own_name() -> None:
    """A principal named twice (deployer and operator) must not make two assignments of one name."""
    for env, resources in _deployed():
        names = [r.body["name"] for r in _role_assignments(resources)]
        assert len(names) == len(set(names)), env


def test_the_app_identity_keeps_exactly_its_own_roles() -> None:
    identity = "<identity.outputs.principalId>"
    assert _grants(_defaults(), identity) == {
        (ROLE["blob data owner"], ACCOUNTS, "<storage.outputs.name>"),
        (ROLE["queue data contributor"], ACCOUNTS, "<storage.outputs.name>"),
        (ROLE["table data contributor"], ACCOUNTS, "<storage.outputs.name>"),
        (
            "3913510d-42f4-4e42-8a64-420c390055eb",
            "Microsoft.Insights/components",
            "<monitoring.outputs.appInsightsName>",
        ),
    }


# --- the template and the code --------------------------------------------------------------


def test_function_app_sets_every_setting_the_code_needs_in_azure() -> None:
    settings = _app_settings(_defaults())
    bicep = set(settings)
    assert setting_names() - NOT_IN_AZURE <= bicep
    assert bicep - setting_names() <= HOST_SETTINGS
    assert settings["GRAPH_CREDENTIAL"] == "azure"
    assert settings["AZURE_CLIENT_ID"] == settings["AzureWebJobsStorage__clientId"]
    assert str(settings["AZURE_CLIENT_ID"]) == "<identity.outputs.clientId>"


def test_resource_names_match_the_code_defaults() -> None:
    resources = _defaults()
    defaults = Settings()
    queues = {r.body["name"] for r in resources if r.type == QUEUES and not r.existing}
    assert {
        defaults.provisioning_queue,
        defaults.poison_queue,
        defaults.work_queue,
        defaults.bulk_queue,
        defaults.callback_queue,
        f"{defaults.callback_queue}-poison",
    } <= queues
    tables = {r.body["name"] for r in resources if r.type.endswith("/tables")}
    assert {defaults.results_table, defaults.pacing_table, defaults.subscriptions_table} <= tables
    settings = _app_settings(resources)
    assert settings["BULK_CONTAINER"] == "bulk-user-updates"
    assert "bulk-user-updates" in {
        r.body["name"] for r in resources if r.type == CONTAINERS and not r.existing
    }


def test_sample_readme_and_bicep_name_the_same_settings() -> None:
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]) - {
        "FUNCTIONS_WORKER_RUNTIME"
    }
    bicep = set(_app_settings(_defaults())) - HOST_SETTINGS
    readme = (ROOT / "README.md").read_text()
    assert sample - NOT_IN_AZURE == bicep - {"AzureWebJobsStorage__accountName"}
    for name in sample | bicep | HOST_SETTINGS:
        assert f"`{name}`" in readme, name


def test_readme_names_every_azd_setting_and_the_manual_grant() -> None:
    readme = (ROOT / "README.md").read_text()
    deploying = readme[readme.index("## Deploying to Azure") :]
    for variable in [*AZD_CHOICES, "INSTANCE_MEMORY_MB", "GRANT_GRAPH_PERMISSIONS"]:
        assert f"`{variable}`" in deploying, variable
    assert "### Granting the Graph permissions by hand" in deploying
