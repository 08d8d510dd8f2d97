"""The operator CLI (`python -m batching`) against the real stack, run as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batching.intake import parse_job
from batching.models import Job
from batching.records import PROCESSING_FAILED, JobSummary, OperationOutcome, OperationStatus
from batching.service import ProvisioningService
from batching.settings import Settings
from devhost.stack import ROOT, DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import (
    blob_names,
    bulk_container,
    job,
    patch_users,
    poison_messages,
    put_message,
    rows,
    wait_until,
)


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batching", *args],
        cwd=ROOT,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_poison_replay_brings_messages_back_after_the_fault_is_fixed(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(3)
    # Deployed with a bad setting: every delivery fails, and the host poisons the message.
    broken = {
        **app_env,
        "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0",  # refused with the emulator credential
        "MAX_DEQUEUE_COUNT": "2",
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:00.2",
    }
    host = start_devhost(broken, tmp_path / "broken.log")
    try:
        put_message(app_env, job(patch_users(3), job_id="replay-me"), as_base64=False)
        wait_until(lambda: len(poison_messages(app_env)) == 1, timeout=60)
    finally:
        host.stop()

    listed = cli(app_env, "poison", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["jobId"], entry["kind"], entry["operations"]) == ("replay-me", "job", 3)

    fixed = start_devhost(app_env, tmp_path / "fixed.log")  # the setting is fixed
    try:
        replayed = cli(app_env, "poison", "replay")
        assert replayed.returncode == 0, replayed.stderr
        assert "replay-me" in replayed.stdout
        wait_until(
            lambda: {r["Status"] for r in rows(app_env, "replay-me").values()} == {"Succeeded"}, timeout=60
        )
    finally:
        fixed.stop()
    assert poison_messages(app_env) == []
    status = cli(app_env, "status", "replay-me", "--json")
    document = json.loads(status.stdout)
    assert document["status"] == "Succeeded"
    assert [op["id"] for op in document["operations"]] == ["u1", "u2", "u3"]


def test_submit_follows_a_json_job_to_the_end_and_status_shows_it(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost, tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(2)
    ops = [
        *patch_users(2),
        {"id": "ghost", "method": "PATCH", "url": "/users/nobody@contoso.com", "body": {}},
    ]
    path = tmp_path / "job.json"
    path.write_text(job(ops, job_id="from-cli"))

    submitted = cli(app_env, "submit", str(path), "--timeout", "60")

    assert submitted.returncode == 1, submitted.stderr  # done, but one operation failed
    assert "PartiallySucceeded" in submitted.stdout
    assert "ghost" in submitted.stdout
    failures = json.loads(cli(app_env, "failures", "from-cli", "--json").stdout)
    assert [(f["id"], f["status"], f["httpStatus"]) for f in failures] == [("ghost", "Failed", 404)]
    table = cli(app_env, "status", "from-cli")
    assert "u1" in table.stdout
    assert "Succeeded" in table.stdout


def test_submit_takes_a_csv_and_bad_input_gets_exit_code_2(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost, tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(30)
    csv_path = tmp_path / "titles.csv"
    csv_path.write_text(
        "userPrincipalName,jobTitle\n" + "".join(f"user{n}@contoso.com,Lead\n" for n in range(1, 31))
    )
    done = cli(app_env, "submit", str(csv_path), "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "Succeeded" in done.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"operations": [{"id": "x", "method": "PATCH", "url": "/directoryRoles/1"}]}))
    refused = cli(app_env, "submit", str(bad))
    assert refused.returncode == 2
    assert "operations[0].url" in refused.stderr


def test_bulk_run_applies_a_dropped_file_now(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    graph.emulator.tenant.seed_users(5)
    with bulk_container(app_env) as container:
        rows_text = "".join(f"user{n}@contoso.com,Ops\n" for n in range(1, 6))
        container.upload_blob("now.csv", ("userPrincipalName,department\n" + rows_text).encode())

    ran = cli(app_env, "bulk", "run", "--json")

    assert ran.returncode == 0, ran.stderr
    [report] = json.loads(ran.stdout)
    assert (report["file"], report["outcome"], report["status"]) == ("now.csv", "processed", "Succeeded")
    assert "processed/now.csv" in blob_names(app_env)


async def test_replay_runs_again_what_failed_only_because_processing_kept_crashing(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(3)
    text = job(patch_users(3), job_id="crashed")
    service = ProvisioningService.create(Settings.model_validate(app_env))
    try:
        await service.ensure_resources()
        # What the last failed delivery leaves: u1 done, u2 and u3 Failed as processingFailed,
        # the message in the poison queue as it arrived.
        parsed = parse_job(text)
        assert isinstance(parsed, Job)
        await service.store.create_job(
            JobSummary("crashed", 3, parsed.body_hash, None, "queue", enqueued=True),
            [
                OperationOutcome("u1", OperationStatus.SUCCEEDED, "PATCH", "/users/user1@contoso.com", 1),
                *(
                    OperationOutcome(f"u{n}", OperationStatus.FAILED, "", "", 0, error_code=PROCESSING_FAILED)
                    for n in (2, 3)
                ),
            ],
        )
        await service.queue.send_poison(text)
    finally:
        await service.aclose()

    host = start_devhost(app_env, tmp_path / "devhost.log")
    try:
        replayed = cli(app_env, "poison", "replay", "--json")
        assert replayed.returncode == 0, replayed.stderr
        wait_until(
            lambda: {r["Status"] for r in rows(app_env, "crashed").values()} == {"Succeeded"}, timeout=60
        )
    finally:
        host.stop()
    sent = [item["url"] for call in graph.emulator.batch_calls() for item in call["items"]]
    assert sorted(sent) == ["/users/user2@contoso.com", "/users/user3@contoso.com"]  # u1 had a result
