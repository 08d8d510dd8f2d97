"""One Graph budget for every instance: two dev host processes, each with its own queue, share
only the storage account's pacing table, and together stay inside the budget and honour each
other's holds. Priorities: a flow's job is not stuck behind a bulk drain.

No timing assertions: the checks are on when Graph received what (the emulator's call log).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from devhost.stack import DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import (
    bulk_container,
    job,
    poll_job,
    put_message,
    queue_length,
    rows,
    run_bulk_pickup,
    wait_until,
)

BUDGET = 20  # writes per second, for both hosts together


def _instance_env(app_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """A second instance of the same app: same storage account and pacing table, own queues."""
    suffix = uuid.uuid4().hex[:8]
    return {
        **app_env,
        "PROVISIONING_QUEUE": f"prov-{suffix}",
        "WORK_QUEUE": f"provwork-{suffix}",
        "BULK_QUEUE": f"provbulk-{suffix}",
        **overrides,
    }


@contextlib.contextmanager
def _hosts(envs: list[dict[str, str]], tmp_path: Path) -> Iterator[list[DevHost]]:
    hosts = [start_devhost(env, tmp_path / f"devhost-{n}.log") for n, env in enumerate(envs)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def _patches(prefix: str, users: range) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{n}",
            "method": "PATCH",
            "url": f"/users/user{n}@contoso.com",
            "body": {"jobTitle": prefix},
        }
        for n in users
    ]


def _submit(client: httpx.Client, host: DevHost, job_id: str, operations: list[dict[str, Any]]) -> str:
    answer = client.post(f"{host.base_url}/api/jobs", json={"jobId": job_id, "operations": operations})
    assert answer.status_code == 202, answer.text
    return str(answer.headers["Location"])


def _write_times(graph: ServedEmulator) -> list[float]:
    return sorted(
        float(call["at"])
        for call in graph.emulator.batch_calls()
        for item in call["items"]
        if item["method"] in {"POST", "PATCH", "PUT", "DELETE"}
    )


def test_two_processes_sharing_one_storage_account_never_exceed_the_budget_in_any_window(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(240)
    budget = {"GRAPH_WRITES_PER_SECOND": str(BUDGET)}
    envs = [_instance_env(app_env, **budget), _instance_env(app_env, **budget)]
    with _hosts(envs, tmp_path) as hosts, httpx.Client(timeout=30, headers=hosts[0].headers) as client:
        locations = [
            _submit(client, hosts[0], "first", _patches("a", range(1, 121))),
            _submit(client, hosts[1], "second", _patches("b", range(121, 241))),
        ]
        for location in locations:
            poll_job(client, location, timeout=120)

    assert all(r["Status"] == "Succeeded" for job in ("first", "second") for r in rows(app_env, job).values())
    sent = _write_times(graph)
    assert len(sent) == 240
    for start in sent:
        for width in (1.0, 3.0, 6.0):
            inside = sum(1 for at in sent if start <= at < start + width)
            # the burst (one batch) plus the rate, with 0.1 s for loopback jitter
            assert inside <= 20 + BUDGET * (width + 0.1), (width, inside)


def test_a_hold_learned_by_one_process_is_honoured_by_the_other(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(30)
    graph.emulator.configure(
        {"itemFaults": [{"urlContains": "user1@", "status": 429, "times": 1, "retryAfter": "4"}]}
    )
    envs = [_instance_env(app_env), _instance_env(app_env)]
    with _hosts(envs, tmp_path) as hosts, httpx.Client(timeout=30, headers=hosts[0].headers) as client:
        first = _submit(client, hosts[0], "throttled", _patches("t", range(1, 2)))
        wait_until(lambda: bool(graph.emulator.batch_calls()), timeout=30)
        second = _submit(client, hosts[1], "bystander", _patches("b", range(2, 22)))
        for location in (first, second):
            poll_job(client, location, timeout=60)

    calls = graph.emulator.batch_calls()
    refused_at = float(calls[0]["at"])
    assert calls[0]["items"][0]["status"] == 429
    later = [float(call["at"]) for call in calls[1:]]
    assert later
    assert min(later) >= refused_at + 4 - 0.05  # neither process sent into the closed window
    assert all(r["Status"] == "Succeeded" for r in rows(app_env, "bystander").values())
    assert rows(app_env, "throttled")["t1"]["Status"] == "Succeeded"


def test_a_flow_job_is_not_stuck_behind_a_bulk_drain(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(400)
    with bulk_container(app_env) as container:
        lines = "".join(f"user{n}@contoso.com,Drained\n" for n in range(1, 301))
        container.upload_blob("nightly.csv", ("userPrincipalName,department\n" + lines).encode())
    env = {**app_env, "GRAPH_WRITES_PER_SECOND": str(BUDGET)}
    with _hosts([env], tmp_path) as [host], httpx.Client(timeout=30, headers=host.headers) as client:
        run_bulk_pickup(host.base_url)
        wait_until(lambda: len(_write_times(graph)) >= 40, timeout=60)  # the drain is under way
        location = _submit(client, host, "flow", _patches("f", range(301, 321)))
        assert poll_job(client, location, timeout=60)[-1].status_code == 200
        wait_until(lambda: len(_write_times(graph)) == 320, timeout=120)

    def last_send(users: range) -> float:
        urls = {f"/users/user{n}@contoso.com" for n in users}
        return max(
            float(c["at"]) for c in graph.emulator.batch_calls() for i in c["items"] if i["url"] in urls
        )

    assert last_send(range(301, 321)) < last_send(range(1, 301))  # the flow did not wait for the drain
    assert all(r["Status"] == "Succeeded" for r in rows(app_env, "flow").values())


def test_extra_messages_stay_leased_while_their_work_waits_for_graphs_pace(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(120)
    for part in range(3):
        users = range(part * 40 + 1, part * 40 + 41)
        put_message(app_env, job(_patches(f"p{part}-", users), f"slow-{part}"), as_base64=False)
    # 120 writes at 10/s take 12 s, twice the lease of the messages taken beside the first.
    env = {**app_env, "GRAPH_WRITES_PER_SECOND": "10", "QUEUE_EXTRA_LEASE_SECONDS": "6"}
    with _hosts([env], tmp_path):
        wait_until(lambda: len(_write_times(graph)) >= 120 and queue_length(app_env) == 0, timeout=90)
    sent = [item["url"] for call in graph.emulator.batch_calls() for item in call["items"]]
    assert len(sent) == len(set(sent)) == 120  # nothing was taken again and sent twice
    assert all(r["Status"] == "Succeeded" for n in range(3) for r in rows(app_env, f"slow-{n}").values())
