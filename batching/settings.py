"""All settings the app reads, in one typed object read once per process.

Names are the app-setting names used in Azure, `local.settings.json` and the environment,
so the same object serves the function app, the development host and the operator CLI.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"


class Settings(BaseSettings):
    """Typed view of the app settings; see README "Settings" for each one."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=False)

    # Storage: a connection string locally (Azurite), identity-based settings in Azure.
    storage_connection_string: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage")
    )
    storage_account_name: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__accountName")
    )
    storage_queue_service_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__queueServiceUri")
    )
    storage_table_service_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__tableServiceUri")
    )
    storage_blob_service_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__blobServiceUri")
    )

    provisioning_queue: str = Field(
        default="provisioning-requests",
        validation_alias=AliasChoices("PROVISIONING_QUEUE"),
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$",
    )
    work_queue: str = Field(
        default="provisioning-work",
        validation_alias=AliasChoices("WORK_QUEUE"),
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$",
    )
    bulk_queue: str = Field(
        default="provisioning-bulk",
        validation_alias=AliasChoices("BULK_QUEUE"),
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$",
    )
    results_table: str = Field(
        default="ProvisioningResults",
        validation_alias=AliasChoices("RESULTS_TABLE"),
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
    )

    graph_base_url: str = Field(
        default=DEFAULT_GRAPH_BASE_URL, validation_alias=AliasChoices("GRAPH_BASE_URL")
    )
    graph_credential: Literal["azure", "emulator"] = Field(
        default="azure", validation_alias=AliasChoices("GRAPH_CREDENTIAL")
    )
    azure_client_id: str | None = Field(default=None, validation_alias=AliasChoices("AZURE_CLIENT_ID"))

    graph_timeout_seconds: float = Field(
        default=60.0, gt=0, le=230, validation_alias=AliasChoices("GRAPH_TIMEOUT_SECONDS")
    )
    graph_max_concurrent_batches: int = Field(
        default=4, ge=1, le=32, validation_alias=AliasChoices("GRAPH_MAX_CONCURRENT_BATCHES")
    )
    max_attempts: int = Field(default=8, ge=1, le=50, validation_alias=AliasChoices("MAX_ATTEMPTS"))
    backoff_base_seconds: float = Field(
        default=2.0, gt=0, validation_alias=AliasChoices("BACKOFF_BASE_SECONDS")
    )
    backoff_max_seconds: float = Field(
        default=300.0, gt=0, validation_alias=AliasChoices("BACKOFF_MAX_SECONDS")
    )
    max_dequeue_count: int = Field(default=5, ge=1, validation_alias=AliasChoices("MAX_DEQUEUE_COUNT"))
    # Retry-After on 202 answers: the time the work left takes at the app's pace, within these
    # bounds (batching.connector.polling).
    status_retry_after_seconds: int = Field(
        default=5, ge=1, le=3600, validation_alias=AliasChoices("STATUS_RETRY_AFTER_SECONDS")
    )
    status_retry_after_max_seconds: int = Field(
        default=60, ge=1, le=3600, validation_alias=AliasChoices("STATUS_RETRY_AFTER_MAX_SECONDS")
    )
    # Callbacks (batching.connector.callbacks): their queue, and the hosts they may be POSTed
    # to: `default` (Power Platform's callback hosts), host names, `*.suffix` patterns.
    callback_queue: str = Field(
        default="provisioning-callbacks",
        validation_alias=AliasChoices("CALLBACK_QUEUE"),
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$",
    )
    # The trigger's subscriptions (batching.connector.subscriptions): their callback URLs are
    # secrets, so they live in a table of their own that only the app's identity can read.
    subscriptions_table: str = Field(
        default="ProvisioningSubscriptions",
        validation_alias=AliasChoices("SUBSCRIPTIONS_TABLE"),
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
    )
    callback_allowed_hosts: str = Field(
        default="default", max_length=4096, validation_alias=AliasChoices("CALLBACK_ALLOWED_HOSTS")
    )
    public_base_url: str | None = Field(default=None, validation_alias=AliasChoices("PUBLIC_BASE_URL"))
    batch_linger_seconds: float = Field(
        default=0.1, ge=0, le=5, validation_alias=AliasChoices("BATCH_LINGER_SECONDS")
    )
    queue_extra_messages: int = Field(
        default=64, ge=0, le=256, validation_alias=AliasChoices("QUEUE_EXTRA_MESSAGES")
    )
    queue_extra_lease_seconds: int = Field(
        default=300, ge=5, le=3600, validation_alias=AliasChoices("QUEUE_EXTRA_LEASE_SECONDS")
    )
    claim_timeout_seconds: int = Field(
        default=300, ge=5, le=3600, validation_alias=AliasChoices("CLAIM_TIMEOUT_SECONDS")
    )
    graph_writes_per_second: float = Field(
        default=19.5, gt=0, le=1000, validation_alias=AliasChoices("GRAPH_WRITES_PER_SECOND")
    )
    graph_read_units_per_second: float = Field(
        default=300.0, gt=0, le=10000, validation_alias=AliasChoices("GRAPH_READ_UNITS_PER_SECOND")
    )
    pacing_table: str = Field(
        default="GraphPacing",
        validation_alias=AliasChoices("PACING_TABLE"),
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
    )
    pacing_fallback_share: float = Field(
        default=0.25, gt=0, le=1, validation_alias=AliasChoices("PACING_FALLBACK_SHARE")
    )
    throttle_max_wait_seconds: float = Field(
        default=3600.0, gt=0, le=7 * 24 * 3600, validation_alias=AliasChoices("THROTTLE_MAX_WAIT_SECONDS")
    )
    throttle_local_wait_seconds: float = Field(
        default=30.0, ge=0, le=600, validation_alias=AliasChoices("THROTTLE_LOCAL_WAIT_SECONDS")
    )
    replication_retry_seconds: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("REPLICATION_RETRY_SECONDS")
    )
    replication_max_wait_seconds: float = Field(
        default=900.0, gt=0, validation_alias=AliasChoices("REPLICATION_MAX_WAIT_SECONDS")
    )
    # `POST /teams` answers 202 and makes the team in the background: how often its operation
    # is read (Graph asks for more than 30 s between reads) and for how long in all.
    teams_operation_poll_seconds: float = Field(
        default=30.0, gt=0, le=600, validation_alias=AliasChoices("TEAMS_OPERATION_POLL_SECONDS")
    )
    teams_operation_max_wait_seconds: float = Field(
        default=3600.0, gt=0, le=24 * 3600, validation_alias=AliasChoices("TEAMS_OPERATION_MAX_WAIT_SECONDS")
    )

    bulk_container: str = Field(
        default="bulk-user-updates",
        validation_alias=AliasChoices("BULK_CONTAINER"),
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
    )
    # Read by the timer trigger itself (`%BULK_SCHEDULE%`); kept here so it is documented and set.
    bulk_schedule: str = Field(default="0 */15 * * * *", validation_alias=AliasChoices("BULK_SCHEDULE"))
    bulk_wait_seconds: float = Field(
        default=240.0, ge=0, le=1800, validation_alias=AliasChoices("BULK_WAIT_SECONDS")
    )
    # Compare each row with what Graph holds and write only what differs (false: write every row).
    bulk_change_detection: bool = Field(default=True, validation_alias=AliasChoices("BULK_CHANGE_DETECTION"))

    @property
    def poison_queue(self) -> str:
        """The Functions host's poison queue for the provisioning queue."""
        return f"{self.provisioning_queue}-poison"

    # Callers of the HTTP API, when Entra ID sign-in (App Service authentication) is on: client
    # (application) ids and/or object ids, comma-separated; empty: any caller with a valid key.
    allowed_caller_ids: str = Field(
        default="",
        validation_alias=AliasChoices("ALLOWED_CALLER_IDS"),
        pattern=r"^\s*([0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\s*(,\s*|$))*$",
    )

    # Where spans and metrics go (batching.telemetry): `azure`, Application Insights as the
    # platform's APPLICATIONINSIGHTS_* settings name it; `console`, JSON lines on stdout.
    telemetry_exporter: Literal["azure", "console", "off"] = Field(
        default="off", validation_alias=AliasChoices("TELEMETRY_EXPORTER")
    )


def setting_names() -> frozenset[str]:
    """Every app-setting name the settings object reads (for docs, samples and Bicep checks)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
    return frozenset(names)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def load_local_settings(root: Path) -> Path | None:
    """Copy `Values` from local.settings.json (or, on a fresh clone, the sample that points at
    the embedded stack) into the environment, never over a variable that is already set."""
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = root / name
        if path.exists():
            values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return path
    return None
