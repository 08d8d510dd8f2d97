"""A small run of the fault suite (`bash scripts/faults`): Graph failing often (item 503/504s,
whole-batch 503s, connections cut after acting, answers short of item ids) under two jobs.
Every operation ends with exactly one final row, none is lost, and no user, member reference
or group with a uniqueName is made twice. The full suite reports more per scenario (outcomes
recorded wrong, groups without uniqueName)."""

from __future__ import annotations

from pathlib import Path

from bench.faults.scenarios import Spec, run_scenario
from bench.faults.stack import EmulatorAdmin
from bench.pace.stack import Emulator
from devhost.stack import ServedEmulator

SMOKE = Spec(
    "smoke",
    "smoke: Graph faults",
    "graph",
    {
        "itemErrors": {
            "share": 0.3,
            "answers": [{"status": 503, "acted": False}, {"status": 504, "acted": True}],
        },
        "batchErrors": {"share": 0.05},
        "dropsAfterActing": {"share": 0.1},
        "missingAnswers": {"share": 0.05, "itemShare": 0.25},
    },
    writes_per_second=1000,
    settings={"BACKOFF_BASE_SECONDS": "0.2", "BACKOFF_MAX_SECONDS": "1"},
)


def test_graph_faults_lose_nothing_and_make_nothing_twice_that_can_be_checked(
    graph: ServedEmulator, tmp_path: Path
) -> None:
    emulator = Emulator(graph.port)
    admin = EmulatorAdmin(emulator)
    try:
        outcome = run_scenario(SMOKE, 40, 7, emulator, admin, tmp_path, settle_seconds=1.0)
    finally:
        admin.close()
    assert outcome.collected.faults["injected"], "no fault was injected: the run proves nothing"
    for figures in outcome.figures:
        assert not figures.timed_out
        assert figures.lost == []
        assert figures.final_rows == figures.operations == 20
        assert figures.most_rows_per_op == 1
        assert figures.stray_rows == 0
        assert (figures.duplicate_users, figures.duplicate_references) == (0, 0)
        if figures.variant == "uniqueName":
            assert figures.duplicate_groups == 0
        assert figures.max_attempts <= 8
