"""Per-item 429s: only throttled items are re-sent, never before their Retry-After."""

from __future__ import annotations

import itertools
from collections import defaultdict
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from devhost.stack import DevHost, ServedEmulator, start_devhost
from tests.integration.helpers import job, patch_users, put_message, rows, wait_until


def _seconds(retry_after: str, at: float) -> float:
    try:
        return float(retry_after.split(",")[0])
    except ValueError:
        return parsedate_to_datetime(retry_after).timestamp() - at


@pytest.mark.parametrize("retry_after", ["2", "1.5", "2,120", "http-date:2"])
def test_throttled_items_are_resent_after_retry_after_and_all_succeed(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str], retry_after: str
) -> None:
    graph.emulator.tenant.seed_users(45)
    graph.emulator.configure({"throttle": {"capacity": 30, "refillPerSecond": 10}, "retryAfter": retry_after})
    put_message(app_env, job(patch_users(45), "throttled"), as_base64=True)

    wait_until(
        lambda: (
            len(r := rows(app_env, "throttled")) == 45 and all(x["Status"] == "Succeeded" for x in r.values())
        ),
        timeout=45,
    )

    sends: dict[str, list[dict[str, object]]] = defaultdict(list)
    for call in graph.emulator.batch_calls():
        for item in call["items"]:
            sends[item["url"]].append({"at": call["at"], **item})
    throttled = {url for url, items in sends.items() if any(i["status"] == 429 for i in items)}
    # 45 items against a bucket of 30: some are throttled, and after the first 429 the app
    # holds every send until Retry-After, so the rest are never refused.
    assert 1 <= len(throttled) <= 15
    calls = graph.emulator.batch_calls()
    for call in calls:
        refused = [i for i in call["items"] if i["status"] == 429]
        if refused:
            closed_until = float(call["at"]) + min(
                _seconds(str(i["retryAfter"]), float(call["at"])) for i in refused
            )
            assert not [c for c in calls if float(call["at"]) < float(c["at"]) < closed_until - 0.05]

    for url, items in sends.items():
        if url not in throttled:
            assert len(items) == 1, f"{url} was never throttled but sent {len(items)} times"
            continue
        for earlier, later in itertools.pairwise(items):
            assert earlier["status"] == 429
            wait = _seconds(str(earlier["retryAfter"]), float(earlier["at"]))  # type: ignore[arg-type]
            assert float(later["at"]) - float(earlier["at"]) >= wait - 0.05, url  # type: ignore[arg-type]
        assert items[-1]["status"] == 204

    stored = rows(app_env, "throttled")
    assert all(stored[f"u{i}"]["Attempts"] >= 1 for i in range(1, 46))
    assert sum(1 for r in stored.values() if r["Attempts"] > 1) == len(throttled)
    assert all(r["ErrorMessage"] == "" for r in stored.values())


def test_a_throttled_operation_is_never_failed_while_its_time_bound_lasts(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(2)
    graph.emulator.configure(
        {"itemFaults": [{"urlContains": "user1@", "status": 429, "times": 12, "retryAfter": "0.2"}]}
    )
    put_message(app_env, job(patch_users(2), "outlasts"), as_base64=True)
    wait_until(
        lambda: (
            len(r := rows(app_env, "outlasts")) == 2 and all(x["Status"] == "Succeeded" for x in r.values())
        ),
        timeout=45,
    )
    stored = rows(app_env, "outlasts")
    assert stored["u1"]["Attempts"] == 13  # twelve 429s, more than MAX_ATTEMPTS (8), then done
    assert stored["u1"]["HttpStatus"] == 204


def test_an_operation_throttled_past_its_time_bound_ends_failed_with_graphs_answer(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(2)
    graph.emulator.configure(
        {"itemFaults": [{"urlContains": "user1@", "status": 429, "times": 999, "retryAfter": "0.2"}]}
    )
    host = start_devhost({**app_env, "THROTTLE_MAX_WAIT_SECONDS": "3"}, tmp_path / "devhost.log")
    try:
        put_message(app_env, job(patch_users(2), "gives-up"), as_base64=True)
        wait_until(lambda: rows(app_env, "gives-up").get("u1", {}).get("Status") == "Failed", timeout=45)
    finally:
        host.stop()
    stored = rows(app_env, "gives-up")
    assert stored["u1"]["HttpStatus"] == 429
    assert "time bound" in stored["u1"]["ErrorMessage"]
    assert stored["u1"]["Attempts"] > 8  # it was never the attempt budget that ended it
    assert stored["u2"]["Status"] == "Succeeded"


def test_whole_batch_503_retries_every_item(
    devhost: DevHost, graph: ServedEmulator, app_env: dict[str, str]
) -> None:
    graph.emulator.tenant.seed_users(3)
    graph.emulator.configure({"batchFaults": [{"status": 503, "retryAfter": "1"}]})
    put_message(app_env, job(patch_users(3), "batch-503"), as_base64=True)
    wait_until(
        lambda: (
            len(r := rows(app_env, "batch-503")) == 3 and all(x["Status"] == "Succeeded" for x in r.values())
        ),
        timeout=30,
    )
    calls = graph.emulator.batch_calls()
    assert [c["status"] for c in calls] == [503, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 1.0
