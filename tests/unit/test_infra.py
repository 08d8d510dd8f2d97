"""The Bicep, checked offline: it parses, checkov passes, and it agrees with the code."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from batching.allowlist import required_permissions
from batching.settings import Settings, setting_names

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IAC_PYTHON = ROOT / ".venv-iac" / "bin" / "python"
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


def _bicep_app_settings() -> dict[str, str]:
    text = (INFRA / "modules" / "functionapp.bicep").read_text()
    return dict(re.findall(r"\{ name: '([^']+)', value: ([^}]+?) \}", text))


def _iac(*args: str) -> subprocess.CompletedProcess[str]:
    if not IAC_PYTHON.exists():
        pytest.fail("offline Bicep tools missing: run scripts/test (it installs .venv-iac)")
    return subprocess.run([str(IAC_PYTHON), *args], capture_output=True, text=True, timeout=300, check=False)


def test_every_bicep_file_parses_with_pycep_0_7_1() -> None:
    assert BICEP_FILES, "no .bicep files found"
    script = (
        "import sys, importlib.metadata as m; from pathlib import Path; from pycep import BicepParser\n"
        "assert m.version('pycep-parser') == '0.7.1', m.version('pycep-parser')\n"
        "for f in sys.argv[1:]: BicepParser().parse(file_path=Path(f))\n"
    )
    result = _iac("-c", script, *map(str, BICEP_FILES))
    assert result.returncode == 0, result.stderr[-3000:]


def test_checkov_runs_checks_and_finds_nothing() -> None:
    result = _iac(
        "-m", "checkov.main", "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"
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


def test_function_app_sets_every_setting_the_code_needs_in_azure() -> None:
    bicep = set(_bicep_app_settings())
    assert setting_names() - NOT_IN_AZURE <= bicep
    assert bicep - setting_names() <= HOST_SETTINGS
    assert not bicep & {"AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE"}
    settings = _bicep_app_settings()
    assert settings["GRAPH_CREDENTIAL"] == "'azure'"
    assert settings["AZURE_CLIENT_ID"] == settings["AzureWebJobsStorage__clientId"] == "identityClientId"


def test_resource_names_match_the_code_defaults() -> None:
    main = (INFRA / "main.bicep").read_text()
    defaults = Settings()
    assert f"provisioningQueue: '{defaults.provisioning_queue}'" in main
    assert f"poisonQueue: '{defaults.poison_queue}'" in main
    assert f"workQueue: '{defaults.work_queue}'" in main
    assert f"bulkQueue: '{defaults.bulk_queue}'" in main
    assert f"resultsTable: '{defaults.results_table}'" in main
    assert "bulkContainer: 'bulk-user-updates'" in main


def test_producers_may_only_send_to_the_public_queue() -> None:
    """Only the app writes its work and bulk queues: producers get Storage Queue Data Message
    Sender scoped to the provisioning queue, and no other role anywhere."""
    main = (INFRA / "main.bicep").read_text()
    producers = (INFRA / "modules" / "producers.bicep").read_text()
    module = main[main.index("module producers") : main.index("}\n", main.index("module producers"))]
    assert "queueName: names.provisioningQueue" in module
    assert re.findall(r"roleDefinitions', (\w+)\)", producers) == ["queueDataMessageSender"]
    assert "var queueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'" in producers
    assert "scope: queue\n" in producers
    others = [p.read_text() for p in BICEP_FILES if p.name not in ("producers.bicep", "main.bicep")]
    assert not any("producerPrincipalIds" in text for text in others)


def test_graph_roles_cover_the_allow_list() -> None:
    main = (INFRA / "main.bicep").read_text()
    block = main[
        main.index("param graphAppRoles array = [") : main.index("]", main.index("param graphAppRoles"))
    ]
    granted = set(re.findall(r"'([\w.]+)'", block))
    assert required_permissions() <= granted


def test_sample_readme_and_bicep_name_the_same_settings() -> None:
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]) - {
        "FUNCTIONS_WORKER_RUNTIME"
    }
    bicep = set(_bicep_app_settings()) - HOST_SETTINGS
    readme = (ROOT / "README.md").read_text()
    assert sample - NOT_IN_AZURE == bicep - {"AzureWebJobsStorage__accountName"}
    for name in sample | bicep | HOST_SETTINGS:
        assert f"`{name}`" in readme, name


def test_azd_service_and_graph_extension_are_declared() -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert re.search(r"api:\s*\n\s*project: \.\s*\n\s*language: python\s*\n\s*host: function", azure_yaml)
    assert "'azd-service-name': 'api'" in (INFRA / "modules" / "functionapp.bicep").read_text()
    config = json.loads((ROOT / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    assert "extension microsoftGraphV1" in (INFRA / "modules" / "graph-permissions.bicep").read_text()
