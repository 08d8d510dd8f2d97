from __future__ import annotations

from batching.models import Operation, WorkItem
from batching.planner import PlannedItem, WavePlanner
from batching.records import OperationStatus


def _item(job: str, op_id: str, *deps: str) -> PlannedItem:
    return PlannedItem(
        job, WorkItem(operation=Operation(id=op_id, method="GET", url=f"/users/{op_id}", depends_on=deps))
    )


def test_independent_operations_pack_into_full_batches_of_20() -> None:
    planner = WavePlanner([_item("j", f"o{i}") for i in range(45)], {})
    wave = planner.next_wave()
    assert [len(b) for b in wave.batches] == [20, 20, 5]
    assert planner.next_wave().empty


def test_ready_operations_of_many_jobs_share_a_wave() -> None:
    items = [_item(f"job{j}", "same-id") for j in range(30)]
    wave = WavePlanner(items, {}).next_wave()
    assert [len(b) for b in wave.batches] == [20, 10]


def test_dependency_levels_run_in_order() -> None:
    planner = WavePlanner([_item("j", "c", "b"), _item("j", "b", "a"), _item("j", "a")], {})
    order = []
    while not (wave := planner.next_wave()).empty:
        for batch in wave.batches:
            for planned in batch:
                order.append(planned.key[1])
                planner.settle(planned.key, OperationStatus.SUCCEEDED)
    assert order == ["a", "b", "c"]


def test_failed_dependency_skips_dependents_naming_the_failed_one() -> None:
    planner = WavePlanner([_item("j", "a"), _item("j", "b", "a"), _item("j", "c", "b"), _item("j", "d")], {})
    first = planner.next_wave()
    assert {p.key[1] for b in first.batches for p in b} == {"a", "d"}
    planner.settle(("j", "a"), OperationStatus.FAILED)
    planner.settle(("j", "d"), OperationStatus.SUCCEEDED)
    skipped = []
    while not (wave := planner.next_wave()).empty:
        assert wave.batches == []
        skipped.extend(wave.skipped)
    assert sorted((s.planned.key[1], s.failed_dependency) for s in skipped) == [("b", "a"), ("c", "a")]
    assert all("'a'" in s.reason for s in skipped)


def test_withdraw_takes_every_transitive_dependent() -> None:
    items = [
        _item("j", "a"),
        _item("j", "b", "a"),
        _item("j", "c", "b"),
        _item("k", "a"),
        _item("k", "b", "a"),
    ]
    planner = WavePlanner(items, {})
    planner.next_wave()
    withdrawn = planner.withdraw(("j", "a"))
    assert {p.key for p in withdrawn} == {("j", "b"), ("j", "c")}
    assert planner.open_count == 1  # job k's "b" waits on job k's own "a"


def test_dependency_finished_in_an_earlier_run_counts() -> None:
    known = {("j", "a"): OperationStatus.SUCCEEDED, ("j", "x"): OperationStatus.SKIPPED}
    wave = WavePlanner([_item("j", "b", "a"), _item("j", "y", "x")], known).next_wave()
    assert [p.key[1] for b in wave.batches for p in b] == ["b"]
    assert [s.planned.key[1] for s in wave.skipped] == ["y"]


def test_dependency_still_pending_elsewhere_waits_outside() -> None:
    wave = WavePlanner([_item("j", "b", "a")], {("j", "a"): OperationStatus.PENDING}).next_wave()
    assert [p.key[1] for p in wave.waiting_outside] == ["b"]
