"""The settings object, local.settings.sample.json, host.json, README and the trigger metadata agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batching.settings import Settings, setting_names
from devhost.config import QueueOptions

ROOT = Path(__file__).resolve().parents[2]
# Set by the platform in Azure (identity-based storage); not meaningful locally.
AZURE_ONLY = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__blobServiceUri",
}


def test_sample_settings_name_exactly_the_settings_the_app_reads() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(sample) - {"FUNCTIONS_WORKER_RUNTIME"} == setting_names() - AZURE_ONLY


def test_sample_settings_are_valid_and_point_at_the_embedded_stack() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings(**{k: v for k, v in sample.items() if v != ""})
    assert settings.graph_credential == "emulator"
    assert settings.graph_base_url.startswith("http://127.0.0.1:")
    assert "devstoreaccount1" in (settings.storage_connection_string or "")


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in setting_names() if f"`{name}`" not in readme]
    assert missing == []


def test_host_json_matches_what_the_app_assumes() -> None:
    options = QueueOptions.from_host_json(ROOT / "host.json")
    assert options.max_dequeue_count == Settings().max_dequeue_count
    # Producers send plain or base64 JSON; the app decodes both, so the host must not.
    assert options.message_encoding == "none"


def test_function_app_wires_the_three_doors_to_settings() -> None:
    import function_app

    triggers = {
        f.get_function_name(): json.loads(f.get_raw_bindings()[0]) for f in function_app.app.get_functions()
    }
    assert triggers["submit_job"]["route"] == "jobs"
    assert triggers["submit_job"]["authLevel"] == "FUNCTION"
    assert triggers["job_status"]["route"] == "jobs/{jobId}"
    assert triggers["process_queue_message"]["queueName"] == "%PROVISIONING_QUEUE%"
    assert triggers["bulk_user_updates"]["schedule"] == "%BULK_SCHEDULE%"
    assert triggers["bulk_user_updates"]["runOnStartup"] is False


def test_host_json_can_be_overridden_by_app_settings_as_in_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__maxDequeueCount", "2")
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01.5")
    options = QueueOptions.from_host_json(ROOT / "host.json")
    assert options.max_dequeue_count == 2
    assert options.visibility_timeout == 1.5
    assert options.batch_size == 16  # the rest still from host.json


def test_a_cold_start_imports_only_what_the_triggers_need() -> None:
    """The host indexes function_app on every cold start: the library loads on first use."""
    heavy = ("batching", "pydantic", "httpx", "azure.storage", "azure.data", "azure.identity", "rich")
    probe = f"import sys, function_app; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
