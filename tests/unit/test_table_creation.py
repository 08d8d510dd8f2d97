"""Creating a table is not every caller's right: a person whose role is scoped to one table
(README "Roles for people") uses it but gets 403 on creating it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables.aio import TableClient

from batching.storage import create_table_if_missing


class _Table:
    table_name = "ProvisioningResults"

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls = 0

    async def create_table(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def _status(code: int) -> HttpResponseError:
    error = HttpResponseError(message="refused")
    error.status_code = code
    return error


def _create(table: _Table) -> None:
    asyncio.run(create_table_if_missing(cast(TableClient, cast(Any, table))))


def test_a_table_that_exists_or_may_not_be_created_is_used_as_it_is() -> None:
    for error in (None, ResourceExistsError("exists"), _status(403)):
        table = _Table(error)
        _create(table)
        assert table.calls == 1


def test_any_other_refusal_to_create_a_table_is_raised() -> None:
    with pytest.raises(HttpResponseError):
        _create(_Table(_status(500)))
