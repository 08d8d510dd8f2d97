"""The result store on a real Azurite: Pending rows written after the work started never
overwrite an outcome that got there first."""

from __future__ import annotations

from batching.records import JobSummary, OperationOutcome, OperationStatus
from batching.settings import Settings
from batching.storage import table_client
from batching.store import ResultStore
from tests.integration.helpers import rows


async def test_pending_rows_written_late_never_overwrite_an_outcome(app_env: dict[str, str]) -> None:
    store = ResultStore(table_client(Settings.model_validate(app_env), app_env["RESULTS_TABLE"]))
    try:
        await store.ensure_table()
        pending = [
            OperationOutcome(f"op{n}", OperationStatus.PENDING, "PATCH", f"/users/u{n}", seq=n)
            for n in range(150)
        ]
        assert await store.create_summary(JobSummary("late-rows", 150, "hash", None, "http"), pending)
        done = OperationOutcome(
            "op120", OperationStatus.SUCCEEDED, "PATCH", "/users/u120", attempts=1, http_status=204
        )
        await store.record("late-rows", None, [done])

        await store.add_pending("late-rows", None, pending)
    finally:
        await store.close()

    stored = rows(app_env, "late-rows")
    assert len(stored) == 150
    assert stored["op120"]["Status"] == "Succeeded"
    assert stored["op120"]["Seq"] == 120  # it still gets its place in the job
    assert {r["Status"] for key, r in stored.items() if key != "op120"} == {"Pending"}
