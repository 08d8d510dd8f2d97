"""Many small messages still make full batches (issue: shared waves)."""

from __future__ import annotations

from pathlib import Path

from bench.pace.scenarios import enqueue_single_operations
from devhost.stack import ServedEmulator, start_devhost
from tests.integration.helpers import all_partitions, queue_length, wait_until

MESSAGES = 1000


def test_1000_single_operation_messages_make_at_most_52_batch_calls(
    graph: ServedEmulator, app_env: dict[str, str], tmp_path: Path
) -> None:
    graph.emulator.tenant.seed_users(MESSAGES)
    enqueue_single_operations(app_env, MESSAGES)  # the benchmark's scenario 4, checked here

    host = start_devhost(app_env, tmp_path / "devhost.log")
    try:

        def done() -> bool:
            partitions = all_partitions(app_env)
            finished = sum(
                1
                for entities in partitions.values()
                for e in entities
                if e["RowKey"] and e["Status"] != "Pending"
            )
            return finished == MESSAGES and queue_length(app_env) == 0

        wait_until(done, timeout=240, interval=1.0)
    finally:
        host.stop()
        print("\n".join(line for line in host.log().splitlines() if "partial" in line or "Error" in line))

    partitions = all_partitions(app_env)
    assert len(partitions) == MESSAGES
    assert all(
        e["Status"] == "Succeeded" for entities in partitions.values() for e in entities if e["RowKey"]
    )
    calls = graph.emulator.batch_calls()
    sizes = sorted(len(c["items"]) for c in calls)
    print(f"{MESSAGES} messages -> {len(calls)} $batch calls; sizes {sizes}")
    assert len(calls) <= 52
