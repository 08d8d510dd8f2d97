"""Storage clients from settings: a connection string (Azurite, dev) or the managed identity."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from batching.settings import Settings

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient


log = logging.getLogger(__name__)


async def create_if_missing(create: Callable[[], Awaitable[object]], name: str) -> None:
    """Create a table, queue or container unless it exists. A 403 is not an error here: a
    person whose role is scoped to the resource itself (README "Roles for people") may use it
    but not create it, and in Azure the deployment made it; one truly missing fails the first
    real call."""
    try:
        await create()
    except ResourceExistsError:
        pass
    except HttpResponseError as error:
        if error.status_code != 403:
            raise
        log.info("%s: not allowed to create it; using it as it is", name)


async def create_table_if_missing(table: TableClient) -> None:
    await create_if_missing(table.create_table, f"table {table.table_name}")


async def merge_if_unchanged(
    table: TableClient,
    entity: dict[str, Any],
    etag: str | None,
    run: Callable[[Callable[[], Awaitable[object]]], Awaitable[object]] | None = None,
) -> bool:
    """Merge `entity` into its row only if the row is still as read (`etag`): False when it
    changed meanwhile (412) or is gone (404), the caller's cue that someone else moved first.
    `run` wraps the call (a store's retry policy for transient errors)."""

    def merge() -> Awaitable[object]:
        return table.update_entity(
            entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
        )

    try:
        await (run(merge) if run is not None else merge())
    except ResourceNotFoundError:
        return False
    except HttpResponseError as error:
        if error.status_code != 412:
            raise
        return False
    return True


class StorageNotConfigured(ValueError):
    """Neither AzureWebJobsStorage nor its identity-based settings are present."""


def _identity_credential(settings: Settings) -> Any:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if settings.azure_client_id:
        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    return DefaultAzureCredential()


def _service_uri(settings: Settings, service: str) -> str:
    explicit = {
        "queue": settings.storage_queue_service_uri,
        "table": settings.storage_table_service_uri,
        "blob": settings.storage_blob_service_uri,
    }[service]
    if explicit:
        return explicit
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.{service}.core.windows.net"
    raise StorageNotConfigured(
        "set AzureWebJobsStorage (connection string) or AzureWebJobsStorage__accountName"
    )


def queue_client(settings: Settings, queue_name: str, *, base64: bool = True) -> QueueClient:
    """A queue client; base64 message text by default, as the Functions queue trigger expects."""
    policies: dict[str, Any] = (
        {"message_encode_policy": TextBase64EncodePolicy(), "message_decode_policy": TextBase64DecodePolicy()}
        if base64
        else {}
    )
    if settings.storage_connection_string:
        return QueueClient.from_connection_string(settings.storage_connection_string, queue_name, **policies)
    return QueueClient(
        _service_uri(settings, "queue"), queue_name, credential=_identity_credential(settings), **policies
    )


def table_client(settings: Settings, table_name: str) -> TableClient:
    if settings.storage_connection_string:
        return TableClient.from_connection_string(settings.storage_connection_string, table_name)
    return TableClient(_service_uri(settings, "table"), table_name, credential=_identity_credential(settings))


# Bulk files are read in 1 MiB ranges, so a large file never sits in memory whole.
_BLOB_CHUNK_BYTES = 1 << 20


def container_client(settings: Settings, container_name: str) -> ContainerClient:
    from azure.storage.blob.aio import ContainerClient  # only the bulk pickup and CLI need blobs

    options: dict[str, Any] = {
        "max_single_get_size": _BLOB_CHUNK_BYTES,
        "max_chunk_get_size": _BLOB_CHUNK_BYTES,
    }
    if settings.storage_connection_string:
        return ContainerClient.from_connection_string(
            settings.storage_connection_string, container_name, **options
        )
    return ContainerClient(
        _service_uri(settings, "blob"), container_name, credential=_identity_credential(settings), **options
    )
