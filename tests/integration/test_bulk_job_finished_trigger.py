"""The webhook trigger sees bulk CSV runs: a file's job is POSTed once to each subscribed flow
whose filters it matches, a re-run of the same file sends nothing again, and a preview (no job)
sends nothing. Real Azurite, the Graph emulator, a dev host, a local receiver for Power Automate."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from batching.connector.callbacks import CHECK_MIN_SECONDS
from devhost.stack import DevHost, ServedEmulator
from tests.integration.callback_receiver import callback_receiver
from tests.integration.helpers import (
    all_partitions,
    blob_json,
    blob_names,
    bulk_container,
    run_bulk_pickup,
    wait_until,
)

_FILE = "hr/nightly.csv"
_CSV = b"userPrincipalName,jobTitle\r\nuser1@contoso.com,Pilot\r\nuser2@contoso.com,Navigator\r\n"


def _drop(env: dict[str, str], name: str, data: bytes) -> None:
    with bulk_container(env) as container:
        container.upload_blob(name, data, overwrite=True)


def _processed(env: dict[str, str], name: str) -> dict[str, Any]:
    """The file's summary in processed/, once the run has moved the file there."""
    wait_until(lambda: name not in blob_names(env), timeout=15, interval=0.2)
    report: dict[str, Any] = blob_json(env, f"processed/{name}.summary.json")
    return report


def test_a_bulk_files_job_is_posted_once_to_a_matching_subscription_and_a_preview_is_not(
    receiver_host: DevHost, app_env: dict[str, str], graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(2)
    secrets = {name: f"S3cr3tSig{name}{uuid.uuid4().hex}" for name in ("hr", "action", "failures")}
    url = f"{receiver_host.base_url}/api/webhooks/subscriptions"
    with callback_receiver() as receiver, httpx.Client(timeout=30, headers=receiver_host.headers) as client:
        filters: dict[str, dict[str, object]] = {
            "hr": {"correlationIdPrefix": "hr/"},  # the file's name is the job's correlation ID
            "action": {"action": "updateUsers"},  # a bulk job is no typed action's
            "failures": {"onlyWithFailures": True},  # every row succeeds
        }
        for name, extra in filters.items():
            made = client.post(url, json={"callbackUrl": receiver.url(secrets[name]), **extra})
            assert made.status_code == 201, made.text

        _drop(app_env, _FILE, _CSV)
        _drop(app_env, "preview/nightly.csv", _CSV)
        run_bulk_pickup(receiver_host.base_url)
        report = _processed(app_env, _FILE)
        assert "preview/nightly.preview.json" in blob_names(app_env)
        wait_until(lambda: receiver.taken, timeout=15)

        _drop(app_env, _FILE, _CSV)  # the same file again: the same job
        run_bulk_pickup(receiver_host.base_url)
        again = _processed(app_env, _FILE)
        time.sleep(CHECK_MIN_SECONDS + 2)  # a second POST would have come by now
        final = client.get(f"{receiver_host.base_url}/api/jobs/{report['jobId']}")

    assert (report["outcome"], report["status"]) == ("processed", "Succeeded")
    assert again["jobId"] == report["jobId"]
    assert receiver.attempts == 1  # not for the preview, the re-run, or the other filters
    [taken] = receiver.taken
    assert taken.path.endswith(f"sig={secrets['hr']}")
    assert final.status_code == 200
    assert taken.body == {**final.json(), "statusUrl": f"{receiver_host.base_url}/api/jobs/{report['jobId']}"}
    assert (taken.body["correlationId"], taken.body["operationCount"]) == (_FILE, 2)
    # The URLs stay in the subscriptions table: no result row, blob or log line has them.
    written = json.dumps([all_partitions(app_env), report, again], default=str)
    for secret in secrets.values():
        assert secret not in written
        assert secret not in receiver_host.log()
