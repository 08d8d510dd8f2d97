"""Bulk user updates: CSV files in the bulk container, applied by the timer's pickup run."""

from __future__ import annotations

import codecs
from typing import Any

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import (
    blob_json,
    blob_names,
    bulk_container,
    queue_length,
    rows,
    run_bulk_pickup,
    wait_until,
)


def _csv(count: int, *, title: str = "Engineer") -> bytes:
    lines = ["userPrincipalName,jobTitle,department,accountEnabled"]
    lines += [f"user{n}@contoso.com,{title} {n},Dept {n % 7},true" for n in range(1, count + 1)]
    return ("\r\n".join(lines) + "\r\n").encode()


def _drop(env: dict[str, str], name: str, data: bytes) -> None:
    with bulk_container(env) as container:
        container.upload_blob(name, data, overwrite=True)


def _processed(env: dict[str, str], name: str, timeout: float = 120) -> dict[str, Any]:
    wait_until(lambda: f"processed/{name}.summary.json" in blob_names(env), timeout=timeout, interval=0.5)
    wait_until(lambda: name not in blob_names(env), timeout=10)
    report: dict[str, Any] = blob_json(env, f"processed/{name}.summary.json")
    return report


def _writes(graph: ServedEmulator) -> list[dict[str, Any]]:
    """The `$batch` calls that carried writes (reads of current values left out)."""
    return [call for call in graph.emulator.batch_calls() if any(i["method"] != "GET" for i in call["items"])]


def test_a_2500_row_file_is_applied_by_one_run_in_125_full_batches(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    # Every row differs from the tenant, so every row is written, after one read of the tenant.
    graph.emulator.tenant.seed_users(2500)
    _drop(app_env, "hr-export.csv", _csv(2500))

    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "hr-export.csv")

    assert report["outcome"] == "processed"
    assert report["status"] == "Succeeded"
    assert report["counts"]["succeeded"] == 2500
    assert {"processed/hr-export.csv", "processed/hr-export.csv.summary.json"} <= blob_names(app_env)
    calls = _writes(graph)
    assert len(calls) == 125
    assert all(len(call["items"]) == 20 for call in calls)
    assert {item["method"] for call in calls for item in call["items"]} == {"PATCH"}
    reads = [call for call in graph.emulator.batch_calls() if call not in calls]
    assert {item["method"] for call in reads for item in call["items"]} == {"GET"}
    results = rows(app_env, report["jobId"])
    assert len(results) == 2500
    assert {row["Status"] for row in results.values()} == {"Succeeded"}
    assert results["line-2"]["CorrelationId"] == "hr-export.csv"
    last = graph.emulator.tenant.find_user("user2500@contoso.com")
    assert last is not None
    assert last["jobTitle"] == "Engineer 2500"


def test_the_same_content_under_another_name_or_two_runs_at_once_is_applied_once(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(40)
    _drop(app_env, "monday.csv", _csv(40))
    run_bulk_pickup(devhost.base_url)  # the timer and an operator's run, at the same moment
    run_bulk_pickup(devhost.base_url)
    first = _processed(app_env, "monday.csv")
    assert first["status"] == "Succeeded"
    assert len(_writes(graph)) == 2

    _drop(app_env, "monday (copy).csv", _csv(40))
    run_bulk_pickup(devhost.base_url)
    copy = _processed(app_env, "monday (copy).csv")

    assert copy["outcome"] == "duplicate"
    assert copy["jobId"] == first["jobId"]
    assert copy["appliedAs"] == "monday.csv"
    assert len(_writes(graph)) == 2
    assert len(rows(app_env, first["jobId"])) == 40


def test_broken_rows_are_rejected_by_line_and_column_while_the_rest_run(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(90)
    header = "userPrincipalName;jobTitle;accountEnabled;favouriteColour"
    lines = [f"user{n}@contoso.com;Analyst;yes;" for n in range(1, 91)]
    broken = {
        5: "user200@contoso.com;Analyst;maybe;",  # bad boolean
        12: "user201@contoso.com;Analyst;2;",  # bad boolean
        20: ";Analyst;true;",  # no key
        33: "  ;Lead;no;",  # a blank key: no key
        41: "user3@contoso.com;Lead;true;",  # duplicate user
        50: "USER4@contoso.com;Lead;true;",  # duplicate user, other case
        58: "user202@contoso.com;Analyst;true;green",  # unknown column
        66: "user203@contoso.com;Analyst;true;blue",  # unknown column
        74: "user204@contoso.com;Analyst;true;;extra",  # more cells than columns
        88: "user205@contoso.com;;;",  # nothing to change
    }
    for index in sorted(broken):
        lines.insert(index, broken[index])
    data = codecs.BOM_UTF8 + ("\n".join([header, *lines]) + "\n").encode()
    _drop(app_env, "with-errors.csv", data)

    run_bulk_pickup(devhost.base_url)
    report = _processed(app_env, "with-errors.csv")

    results = rows(app_env, report["jobId"])
    rejected = {key: row for key, row in results.items() if row["Status"] == "Rejected"}
    succeeded = [row for row in results.values() if row["Status"] == "Succeeded"]
    assert len(rejected) == 10
    assert len(succeeded) == 90
    assert report["status"] == "PartiallySucceeded"
    assert report["counts"] == {**report["counts"], "rejected": 10, "succeeded": 90}
    # Line numbers count the header as line 1.
    assert rejected["line-7"]["ErrorMessage"].startswith("line 7, column accountEnabled:")
    assert "column favouriteColour" in rejected["line-60"]["ErrorMessage"]
    assert "is already on line 4" in rejected["line-43"]["ErrorMessage"]
    assert all(row["ErrorMessage"].startswith(f"line {key[5:]}, column ") for key, row in rejected.items())
    assert queue_length(app_env) == 0


def test_a_file_that_cannot_be_read_moves_to_failed_with_the_reason(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    _drop(app_env, "latin1.csv", "userPrincipalName,jobTitle\nzoë@contoso.com,Café\n".encode("latin-1"))
    _drop(app_env, "notes.txt", b"not a csv")

    run_bulk_pickup(devhost.base_url)
    wait_until(lambda: "failed/latin1.csv.summary.json" in blob_names(app_env), timeout=30)

    report = blob_json(app_env, "failed/latin1.csv.summary.json")
    assert report["outcome"] == "failed"
    assert "not UTF-8" in report["reason"]
    assert "failed/latin1.csv" in blob_names(app_env)
    assert "notes.txt" in blob_names(app_env)  # not a CSV: left where it is
    assert graph.emulator.batch_calls() == []
