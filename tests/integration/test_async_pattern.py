"""The HTTP action's asynchronous pattern, played as Power Automate plays it: POST, then follow
`Location`, waiting `Retry-After` seconds each time, until the first answer that is not 202;
that answer is the action's output. `Retry-After` is the time the work left takes at the app's
pace, within its bounds."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devhost.stack import DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import patch_users

WRITES_PER_SECOND = 20
LOWER, UPPER = 1, 3


@pytest.fixture
def paced_host(app_env: dict[str, str], tmp_path: Path) -> Iterator[DevHost]:
    env = {
        **app_env,
        "GRAPH_WRITES_PER_SECOND": str(WRITES_PER_SECOND),
        "STATUS_RETRY_AFTER_SECONDS": str(LOWER),
        "STATUS_RETRY_AFTER_MAX_SECONDS": str(UPPER),
    }
    host = start_devhost(env, tmp_path / "devhost.log")
    try:
        yield host
    finally:
        host.stop()
        print(host.log()[-4000:])


def run_like_power_automate(
    client: httpx.Client, url: str, body: str, timeout: float = 60
) -> list[httpx.Response]:
    """Every answer the HTTP action sees, the last one being its output."""
    answers = [client.post(url, content=body)]
    deadline = time.monotonic() + timeout
    while answers[-1].status_code == 202:
        assert time.monotonic() < deadline, "still running"
        time.sleep(int(answers[-1].headers["Retry-After"]))
        answers.append(client.get(answers[-1].headers["Location"]))
    return answers


def test_power_automates_http_action_follows_location_at_retry_after_and_ends_with_all_results(
    paced_host: DevHost, graph: ServedEmulator
) -> None:
    graph.emulator.tenant.seed_users(45)
    operations = patch_users(45)
    operations.append(
        {"id": "ghost", "method": "PATCH", "url": "/users/ghost@contoso.com", "body": {"jobTitle": "x"}}
    )
    body = httpx.Request(
        "POST", "http://x", json={"jobId": "pa-1", "correlationId": "run-9", "operations": operations}
    )
    with httpx.Client(timeout=30) as client:  # the key in the query, as a maker pastes the URL
        answers = run_like_power_automate(
            client, f"{paced_host.base_url}/api/jobs?code={paced_host.key}", body.read().decode()
        )

    accepted, *polls, final = answers
    assert accepted.status_code == 202
    location = f"{paced_host.base_url}/api/jobs/pa-1?code={paced_host.key}"
    assert all(answer.headers["Location"] == location for answer in (accepted, *polls))
    # At submission nothing is final: 46 operations at 20 writes/s is 3 s (within 1..3).
    assert int(accepted.headers["Retry-After"]) == min(UPPER, max(LOWER, math.ceil(46 / WRITES_PER_SECOND)))
    for poll in polls:
        assert poll.status_code == 202
        pending = poll.json()["counts"]["pending"]
        assert int(poll.headers["Retry-After"]) == min(
            UPPER, max(LOWER, math.ceil(pending / WRITES_PER_SECOND))
        )

    # The first answer that is not 202 is the output: 200 even though one operation failed.
    assert final.status_code == 200
    result = final.json()
    assert result["status"] == "PartiallySucceeded"
    assert list(result)[:6] == ["jobId", "status", "statusUrl", "correlationId", "operationCount", "counts"]
    assert result["counts"] == {"pending": 0, "succeeded": 45, "failed": 1, "skipped": 0, "rejected": 0}
    by_id = {op["id"]: op for op in result["operations"]}
    assert list(by_id) == [f"u{i}" for i in range(1, 46)] + ["ghost"]  # the maker's ids, in order
    assert by_id["u7"]["status"] == "Succeeded"
    assert (by_id["ghost"]["status"], by_id["ghost"]["httpStatus"]) == ("Failed", 404)
    assert by_id["ghost"]["error"]["code"]
