"""Change-aware bulk updates: rows compared with what Graph holds, only differences written,
and previews that write nothing. Real Azurite, the Graph emulator over loopback, a dev host."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from batching.bulk.pickup import PART_OPERATIONS
from batching.models import WorkMessage
from batching.service import ProvisioningService
from batching.settings import Settings
from batching.storage import queue_client
from batching.store import _SCAN_FROM_KEYS
from devhost.stack import ROOT, DevHost, ServedEmulator
from tests.integration.helpers import (
    blob_json,
    blob_names,
    bulk_container,
    queue_length,
    rows,
    run_bulk_pickup,
    wait_until,
)

HEADER = "userPrincipalName,jobTitle,department,officeLocation,accountEnabled,manager"


def _same(n: int) -> str:
    """A row that says exactly what the seeded tenant holds for user N (emulator seeded_profile)."""
    manager = f"user{(n - 1) // 10}@contoso.com" if n > 10 else "#clear"
    return f"user{n}@contoso.com,Title {n % 40},Dept {n % 12},Building {n % 5},true,{manager}"


def _drop(env: dict[str, str], name: str, lines: list[str]) -> None:
    with bulk_container(env) as container:
        container.upload_blob(name, ("\n".join(lines) + "\n").encode(), overwrite=True)


def _processed(env: dict[str, str], name: str) -> dict[str, Any]:
    wait_until(lambda: f"processed/{name}.summary.json" in blob_names(env), timeout=120, interval=0.5)
    report: dict[str, Any] = blob_json(env, f"processed/{name}.summary.json")
    return report


def _written(graph: ServedEmulator) -> list[dict[str, Any]]:
    return [
        item for call in graph.emulator.batch_calls() for item in call["items"] if item["method"] != "GET"
    ]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m batching ...` as an operator runs it, against the test's stack."""
    return subprocess.run(
        [sys.executable, "-m", "batching", *args],
        cwd=ROOT,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _read_urls(graph: ServedEmulator) -> list[str]:
    calls = graph.emulator.batch_calls()
    return [unquote(item["url"]) for call in calls for item in call["items"] if item["method"] == "GET"]


@pytest.mark.parametrize(("tenant_users", "strategy"), [(40, "$top=999"), (3000, " in (")])
def test_only_differing_properties_and_managers_are_written_and_the_rest_end_no_change(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost, tenant_users: int, strategy: str
) -> None:
    tenant = graph.emulator.tenant
    tenant.seed_users(tenant_users, profile=True)
    user1 = tenant.find_user("user1@contoso.com")
    assert user1 is not None
    lines = [
        HEADER,
        _same(11),  # line 2: nothing differs
        # line 3: a new title; the same manager, by UPN in another case
        "user12@contoso.com,Lead,Dept 0,Building 2,true,USER1@CONTOSO.COM",
        "user13@contoso.com,Title 13,,#clear,yes,",  # 4: office cleared; yes is true
        "user14@contoso.com,,,,no,",  # 5: disabled
        "user15@contoso.com,Title 15,,,,user2@contoso.com",  # 6: a new manager
        "user16@contoso.com,,,,,#clear",  # 7: the manager removed
        "user5@contoso.com,,Dept 5,,,#clear",  # 8: no manager to remove
        f"user17@contoso.com,,,,,{user1['id'].upper()}",  # 9: the same manager, by id
        "user18@contoso.com,title 18,,,,",  # 10: text compares as written: case is a change
        "nobody@contoso.com,Ghost,,,,",  # 11: not in the tenant: sent as it is
        "user19@contoso.com,,Dept 7,,,",  # 12: empty cells are not compared
        *(_same(n) for n in range(21, 41)),  # lines 13-32: enough rows for a scan to pay on a small tenant
    ]
    _drop(app_env, "nightly.csv", lines)

    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "nightly.csv")

    assert any(strategy in url for url in _read_urls(graph))
    written = {(item["method"], item["url"]): item["body"] for item in _written(graph)}
    assert written == {
        ("PATCH", "/users/user12@contoso.com"): {"jobTitle": "Lead"},
        ("PATCH", "/users/user13@contoso.com"): {"officeLocation": None},
        ("PATCH", "/users/user14@contoso.com"): {"accountEnabled": False},
        ("PUT", "/users/user15@contoso.com/manager/$ref"): {
            "@odata.id": "https://graph.microsoft.com/v1.0/users/user2@contoso.com"
        },
        ("DELETE", "/users/user16@contoso.com/manager/$ref"): {},
        ("PATCH", "/users/user18@contoso.com"): {"jobTitle": "title 18"},
        ("PATCH", "/users/nobody@contoso.com"): {"jobTitle": "Ghost"},
    }
    results = rows(app_env, report["jobId"])
    no_change = {key for key, row in results.items() if row["Note"] == "no change"}
    assert {
        "line-2",
        "line-3-manager",
        "line-6",
        "line-8",
        "line-9-manager",
        "line-12",
        "line-32",
    } <= no_change
    # A row that changes nothing has one result, not one per operation.
    assert not {"line-2-manager", "line-8-manager", "line-32-manager"} & set(results)
    assert all(results[key]["Status"] == "Succeeded" for key in no_change)
    assert (results["line-3"]["Status"], results["line-3"]["Note"]) == ("Succeeded", "")
    assert (results["line-11"]["Status"], results["line-11"]["HttpStatus"]) == ("Failed", 404)
    assert report["counts"] == {**report["counts"], "changed": 6, "failed": 1, "rejected": 0}
    assert report["counts"]["unchanged"] == len(no_change) == len(results) - 7 == 26
    user13, user15, user2 = (tenant.find_user(f"user{n}@contoso.com") for n in (13, 15, 2))
    assert user13 is not None
    assert user15 is not None
    assert user2 is not None
    assert user13["officeLocation"] is None
    assert tenant.managers[user15["id"]] == user2["id"]


def test_a_file_where_nothing_changed_writes_nothing(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(400, profile=True)
    _drop(app_env, "unchanged.csv", [HEADER, *(_same(n) for n in range(1, 301))])

    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "unchanged.csv")

    assert _written(graph) == []
    assert report["status"] == "Succeeded"
    assert report["counts"] == {**report["counts"], "succeeded": 300, "unchanged": 300, "changed": 0}
    results = rows(app_env, report["jobId"])
    assert len(results) == 300  # one per row: none changes anything
    assert {(row["Status"], row["Note"]) for row in results.values()} == {("Succeeded", "no change")}
    status = _cli(app_env, "status", report["jobId"])
    assert "changed 0, unchanged 300, failed 0, rejected 0" in status.stdout


def test_reads_throttled_by_graph_wait_and_resume_at_the_same_page(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(250, profile=True)  # 3 pages of 100 with the manager expanded
    graph.emulator.configure(
        {
            "itemFaults": [
                {"urlContains": "skiptoken", "method": "GET", "status": 429, "times": 2, "retryAfter": "0.5"}
            ]
        }
    )
    lines = [HEADER, *(_same(n) for n in range(1, 241)), "user245@contoso.com,Moved,,,,"]
    _drop(app_env, "throttled.csv", lines)

    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "throttled.csv")

    pages = [
        (item["url"], item["status"])
        for call in graph.emulator.batch_calls()
        for item in call["items"]
        if "skiptoken" in item["url"]
    ]
    assert [status for _, status in pages] == [429, 429, 200, 200]
    assert pages[0][0] == pages[1][0] == pages[2][0]  # the same nextLink, as Graph wrote it
    assert [item["url"] for item in _written(graph)] == ["/users/user245@contoso.com"]
    assert report["counts"] == {**report["counts"], "changed": 1, "unchanged": 240}


def test_a_preview_writes_nothing_and_lists_each_change_with_its_current_value(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(60, profile=True)
    lines = [
        HEADER,
        *(_same(n) for n in range(1, 41)),
        "user41@contoso.com,Chief,,#clear,,user1@contoso.com",
        "user42@contoso.com,,,,maybe,",
        "nobody@contoso.com,Ghost,,,,",
    ]
    _drop(app_env, "preview/monday.csv", lines)

    run_bulk_pickup(devhost.base_url)
    wait_until(lambda: "preview/monday.preview.json" in blob_names(app_env), timeout=60)
    reads = len(_read_urls(graph))
    run_bulk_pickup(devhost.base_url)  # the same version is previewed once
    time.sleep(2)
    assert len(_read_urls(graph)) == reads

    assert _written(graph) == []
    names = blob_names(app_env)
    assert {"preview/monday.csv", "preview/monday.preview.csv", "preview/monday.preview.json"} <= names
    assert not any(name.startswith("processed/") for name in names)
    document = blob_json(app_env, "preview/monday.preview.json")
    assert document["counts"] == {"rows": 42, "changed": 1, "unchanged": 40, "notFound": 1, "rejected": 1}
    assert document["changes"] == [
        {
            "line": 42,
            "user": "user41@contoso.com",
            "properties": {
                "jobTitle": {"current": "Title 1", "new": "Chief"},
                "officeLocation": {"current": "Building 1", "new": None},
                "manager": {"current": "user4@contoso.com", "new": "user1@contoso.com"},
            },
        }
    ]
    assert document["notFound"] == [{"line": 44, "user": "nobody@contoso.com"}]
    assert [(r["line"], r["column"]) for r in document["rejections"]] == [(43, "accountEnabled")]
    with bulk_container(app_env) as container:
        text = container.download_blob("preview/monday.preview.csv").readall().decode()
    table = list(csv.DictReader(io.StringIO(text)))
    changed = [(r["property"], r["current"], r["new"]) for r in table if r["result"] == "changed"]
    assert changed == [
        ("jobTitle", "Title 1", "Chief"),
        ("officeLocation", "Building 1", "(empty)"),
        ("manager", "user4@contoso.com", "user1@contoso.com"),
    ]
    assert "maybe" not in text  # a rejected value is never repeated
    _drop(app_env, "preview/monday.csv", [*lines, "user43@contoso.com,Chief,,,,"])  # a new version
    run_bulk_pickup(devhost.base_url)
    wait_until(
        lambda: blob_json(app_env, "preview/monday.preview.json")["counts"]["changed"] == 2, timeout=60
    )
    assert _written(graph) == []


def test_the_cli_previews_a_local_file_beside_it_and_prints_a_summary(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(30, profile=True)
    local = tmp_path / "tuesday.csv"
    local.write_text(
        "\n".join([HEADER, _same(21), "user22@contoso.com,Architect,,,,user1@contoso.com"]) + "\n"
    )

    done = _cli(app_env, "bulk", "preview", str(local))

    assert done.returncode == 0, done.stderr
    assert "changed" in done.stdout
    assert "Architect" in done.stdout
    document = json.loads((tmp_path / "tuesday.preview.json").read_text())
    assert document["counts"] == {"rows": 2, "changed": 1, "unchanged": 1, "notFound": 0, "rejected": 0}
    assert (tmp_path / "tuesday.preview.csv").read_text().count("\n") == 3  # header + jobTitle + manager
    assert _written(graph) == []


def test_a_run_stopped_by_a_failing_read_is_resumed_by_the_next_without_writing_anything_twice(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(450, profile=True)  # 5 pages of 100 with the manager expanded
    changed = {n for n in range(1, 401) if n % 20 == 0}
    lines = [
        HEADER,
        *(_same(n).replace(",Title ", ",Lead ") if n in changed else _same(n) for n in range(1, 401)),
    ]
    # The fourth page is refused once: the run stops there, with what it compared so far written.
    graph.emulator.configure(
        {
            "itemFaults": [
                {"urlContains": "skiptoken=eyJwIjogMzAw", "method": "GET", "status": 400, "times": 1}
            ]
        }
    )
    _drop(app_env, "resumed.csv", lines)

    run_bulk_pickup(devhost.base_url)
    wait_until(lambda: any(i["status"] == 400 for c in graph.emulator.batch_calls() for i in c["items"]), 60)
    time.sleep(1)  # the pickup records what it compared before the failure and reports retry
    wait_until(lambda: queue_length(app_env) == 0, timeout=60)
    first_run = len(_written(graph))
    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "resumed.csv")

    written = [item["url"] for item in _written(graph)]
    assert 0 < first_run < len(changed)
    assert sorted(written) == sorted(f"/users/user{n}@contoso.com" for n in changed)  # each once
    results = rows(app_env, report["jobId"])
    assert len(results) == 2 * len(changed) + (400 - len(changed))  # unchanged rows: one result each
    assert {row["Status"] for row in results.values()} == {"Succeeded"}
    assert report["counts"] == {**report["counts"], "changed": len(changed), "unchanged": 400, "pending": 0}


async def test_changed_rows_go_on_the_queue_in_parts_a_message_can_look_up_by_key(
    graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    """Every row of a large file changes: each message still carries at most PART_OPERATIONS
    operations, as with change detection off, so an invocation's work in flight (and the rows
    it looks up by key) stays the same size."""
    graph.emulator.tenant.seed_users(700, profile=True)
    _drop(
        app_env,
        "all.csv",
        ["userPrincipalName,jobTitle"] + [f"user{n}@contoso.com,New" for n in range(1, 701)],
    )
    settings = Settings.model_validate({**app_env, "BULK_WAIT_SECONDS": "0"})
    service = ProvisioningService.create(settings)
    try:
        await service.ensure_resources()
        [report] = await service.bulk.run_once()
        assert report.outcome == "running"
        sizes: list[int] = []
        async with queue_client(settings, settings.bulk_queue) as queue:
            async for message in queue.receive_messages(messages_per_page=32, max_messages=1000):
                sizes.append(len(WorkMessage.model_validate_json(message.content).items))
    finally:
        await service.aclose()
    assert sum(sizes) == 700
    assert max(sizes) <= PART_OPERATIONS < _SCAN_FROM_KEYS
