"""The HTTP door through the dev host, against Azurite and the emulator over loopback."""

from __future__ import annotations

import httpx

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import job, patch_users, poll_job, rows


def test_posted_45_operation_job_runs_in_3_batches_and_polls_202_then_200(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(45)
    with httpx.Client(timeout=30) as client:
        posted = f"{devhost.base_url}/api/jobs?code={devhost.key}"
        accepted = client.post(posted, content=job(patch_users(45), "job-45"))
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert location == f"{devhost.base_url}/api/jobs/job-45?code={devhost.key}"
        assert int(accepted.headers["Retry-After"]) >= 1
        assert accepted.json()["jobId"] == "job-45"
        assert accepted.json()["operationCount"] == 45
        assert accepted.json()["statusUrl"] == location

        answers = poll_job(client, location)

    assert answers[0].status_code == 202
    final = answers[-1]
    assert final.status_code == 200
    result = final.json()
    assert result["status"] == "Succeeded"
    assert [op["id"] for op in result["operations"]] == [f"u{i}" for i in range(1, 46)]
    assert {op["status"] for op in result["operations"]} == {"Succeeded"}

    stored = rows(app_env, "job-45")
    assert len(stored) == 45
    assert {row["Status"] for row in stored.values()} == {"Succeeded"}
    assert all(row["HttpStatus"] == 204 and row["GraphRequestId"] for row in stored.values())

    calls = graph.emulator.batch_calls()
    assert len(calls) == 3
    assert sorted(len(call["items"]) for call in calls) == [5, 20, 20]
    assert graph.emulator.tenant.find_user("user7@contoso.com")["jobTitle"] == "Title 7"  # type: ignore[index]


def test_unknown_job_is_404(devhost: DevHost) -> None:
    response = httpx.get(f"{devhost.base_url}/api/jobs/nope", headers=devhost.headers)
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "jobId"
