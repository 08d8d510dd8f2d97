"""The scenarios: what fails, how much work runs through it, and how each run is set up."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from batching.records import PROCESSING_FAILED
from bench.faults.figures import Figures, GraphHolds, figures, history, unattributed
from bench.faults.replay import Replay, cli, parse_entries, poisoned, wait_until_quiet
from bench.faults.run import (
    SETTLE_SECONDS,
    Calm,
    Collected,
    Disturbance,
    HostKills,
    Patience,
    StorageOutages,
    collect,
    progress,
    submit_all,
    wait_for_work,
)
from bench.faults.stack import EmulatorAdmin, Hosts, fault_env, restartable_azurite
from bench.faults.workload import Job, job_of
from bench.faults.workload import jobs as make_jobs
from bench.pace.stack import Emulator

GRAPH_TIMEOUT_SECONDS = 5  # the app's per-call timeout in every run (fault_env)
LATE_SECONDS = GRAPH_TIMEOUT_SECONDS + 3  # a late answer arrives after the app gave up
PATIENCE = Patience(stall_seconds=180.0, max_seconds=1800.0)

Kind = Literal["graph", "storage", "process"]


@dataclass(frozen=True)
class Spec:
    key: str  # lower-case letters and digits: it is part of every object name
    title: str
    kind: Kind
    faults: dict[str, Any] | None = None  # the emulator's `faults` option, without the seed
    writes_per_second: int = 50  # the app's write budget (the emulator's limits stay off)
    kills: int = 0
    outages: int = 0
    settings: dict[str, str] = field(default_factory=dict)


ITEM_ERRORS = {
    "share": 0.3,
    "answers": [{"status": 503, "acted": False}, {"status": 504, "acted": True}],
}
BATCH_ERRORS = {"share": 0.05, "status": 503}
# Whole-call faults on their own (1b-1d) at shares that give each kind several times per run, and
# together (1e) at lower ones so most calls still get through.
TIMEOUTS = {"lateAnswers": {"share": 0.1, "seconds": LATE_SECONDS}, "noAnswers": {"share": 0.05}}
DROPS = {"dropsBeforeActing": {"share": 0.1}, "dropsAfterActing": {"share": 0.1}}
MISSING = {"missingAnswers": {"share": 0.2, "itemShare": 0.25}}
TOGETHER = {
    "itemErrors": ITEM_ERRORS,
    "batchErrors": BATCH_ERRORS,
    "lateAnswers": {"share": 0.05, "seconds": LATE_SECONDS},
    "noAnswers": {"share": 0.02},
    "dropsBeforeActing": {"share": 0.05},
    "dropsAfterActing": {"share": 0.05},
    "missingAnswers": {"share": 0.1, "itemShare": 0.25},
}


def specs(*, quick: bool) -> list[Spec]:
    kills, outages = (5, 1) if quick else (20, 3)
    return [
        Spec(
            "1a",
            "1a. Graph: 30 % of writes 503/504 (504s after acting), 5 % of batches 503",
            "graph",
            {"itemErrors": ITEM_ERRORS, "batchErrors": BATCH_ERRORS},
        ),
        Spec(
            "1b",
            f"1b. Graph: acts, then answers after {LATE_SECONDS} s (10 % of calls; the app waits "
            f"{GRAPH_TIMEOUT_SECONDS} s) or never (5 %)",
            "graph",
            dict(TIMEOUTS),
        ),
        Spec(
            "1c",
            "1c. Graph: connection dropped before acting (10 % of calls) and after acting (10 %)",
            "graph",
            dict(DROPS),
        ),
        Spec(
            "1d",
            "1d. Graph: answers missing a quarter of the item ids (20 % of calls)",
            "graph",
            dict(MISSING),
        ),
        Spec(
            "1e",
            "1e. Graph: all at once (1a; late 5 %, never 2 %, drops 5 % + 5 %, short answers 10 %)",
            "graph",
            dict(TOGETHER),
        ),
        Spec(
            "2",
            f"2. Storage: Azurite stopped and restarted {outages} time{'s' if outages > 1 else ''} mid-run",
            "storage",
            writes_per_second=20,
            outages=outages,
        ),
        Spec(
            "3",
            f"3. Process: {kills} SIGKILLs of the dev host, restarted after each",
            "process",
            writes_per_second=20,
            kills=kills,
        ),
    ]


@dataclass(frozen=True)
class Sizes:
    graph: int  # operations per Graph-fault scenario
    storage: int
    process: int

    def operations(self, kind: Kind) -> int:
        return {"graph": self.graph, "storage": self.storage, "process": self.process}[kind]


FULL = Sizes(graph=1000, storage=1000, process=2000)
QUICK = Sizes(graph=200, storage=320, process=400)


@dataclass(frozen=True)
class Outcome:
    spec: Spec
    seed: int
    figures: list[Figures]
    collected: Collected
    # When the work settled with poison messages: the operator's `poison replay`, and the
    # figures once the work settled again (the same invariants are checked on them).
    replay: Replay | None = None
    replayed: list[Figures] = field(default_factory=list)
    replayed_collected: Collected | None = None

    @property
    def every(self) -> list[Figures]:
        return [*self.figures, *self.replayed]


def run_scenario(
    spec: Spec,
    operations: int,
    seed: int,
    emulator: Emulator,
    admin: EmulatorAdmin,
    log_dir: Path,
    settle_seconds: float = SETTLE_SECONDS,
) -> Outcome:
    """One scenario on a fresh Azurite (its own data folder) and one dev host; when its work
    settles with messages on the poison queues, the operator's `poison replay` and a second
    settling."""
    admin.reset()
    if spec.faults is not None:
        admin.configure({"faults": {**spec.faults, "seed": seed}})
    folder = log_dir / f"azurite-{spec.key}"
    replay: Replay | None = None
    replayed_collected: Collected | None = None
    with restartable_azurite(folder / "data", folder.with_suffix(".log")) as azurite:
        settings = {"GRAPH_WRITES_PER_SECOND": str(spec.writes_per_second), **spec.settings}
        hosts = Hosts(
            fault_env(azurite.connection_string, emulator, settings), log_dir, f"scenario-{spec.key}"
        )
        try:
            hosts.start(1)
            jobs = make_jobs(uuid.uuid4().hex[:6], spec.key, operations)
            progress(f"{spec.key}: submitting {len(jobs)} jobs ({operations:,} operations), seed {seed}")
            started_at = time.time()
            submit_all(hosts, jobs)
            disturbance: Disturbance = Calm()
            if spec.kills:
                disturbance = HostKills(hosts, spec.kills, uptime=(3.0, 8.0), seed=seed)
            elif spec.outages:
                disturbance = StorageOutages(
                    azurite, spec.outages, up=(6.0, 12.0), down=(5.0, 15.0), seed=seed
                )

            def tick(done: int, total: int) -> None:
                progress(f"{spec.key}: {done:,}/{total:,} operations final")

            finished_at, timed_out = wait_for_work(hosts, jobs, disturbance, PATIENCE, tick)
            if not azurite.running:
                azurite.start()
            quiet, _ = wait_until_quiet(hosts)
            collected = collect(
                hosts, admin, jobs, started_at, finished_at, timed_out, disturbance, settle_seconds
            )
            poison = poisoned(hosts.env)
            if poison:
                replay = Replay(poison, quiet)
                replayed_collected = replay_poison(
                    spec.key, replay, hosts, admin, jobs, collected, disturbance, settle_seconds, tick
                )
        finally:
            hosts.stop()
    before = figures(spec.title, collected)
    if replay is None:
        outcome = Outcome(spec, seed, before, collected)
    else:
        assert replayed_collected is not None
        after = figures(spec.title, replayed_collected)
        outcome = Outcome(
            spec,
            seed,
            _with_poisoned(before, jobs, replay.by_job()),
            collected,
            replay,
            [
                replace(f, after_replay=True)
                for f in _with_poisoned(after, jobs, replay.by_job(replay.left_entries))
            ],
            replayed_collected,
        )
    write_findings(outcome, log_dir / f"findings-{spec.key}.json")
    return outcome


def replay_poison(
    key: str,
    replay: Replay,
    hosts: Hosts,
    admin: EmulatorAdmin,
    jobs: list[Job],
    collected: Collected,
    disturbance: Disturbance,
    settle_seconds: float,
    tick: Callable[[int, int], None],
) -> Collected:
    """`python -m batching poison replay` with the scenario's settings while its host runs,
    then wait for the work to settle again and collect what it left."""
    env = hosts.env
    replay.reopened = sum(
        1
        for row in collected.rows
        if row.get("Status") == "Failed" and row.get("ErrorCode") == PROCESSING_FAILED
    )
    progress(
        f"{key}: {replay.messages} poison messages, {replay.reopened} rows "
        "processingFailed: python -m batching poison replay"
    )
    with hosts.lock:
        hosts.revive_crashed()
    replayed_at = time.time()
    result = cli(env, "poison", "replay", "--json")
    replay.exit_code = result.returncode
    replay.stderr = result.stderr[-2000:]
    replay.entries = parse_entries(result.stdout)
    finished_at, timed_out = wait_for_work(hosts, jobs, Calm(), PATIENCE, tick)
    replay.quiet_after, _ = wait_until_quiet(hosts)
    again = collect(
        hosts, admin, jobs, collected.started_at, finished_at, timed_out, disturbance, settle_seconds
    )
    replay.left = poisoned(env)
    if replay.left:
        replay.left_entries = parse_entries(cli(env, "poison", "list", "--json").stdout)
    ours = {job.job_id for job in jobs}
    ends = [
        t
        for row in again.rows
        if row.get("PartitionKey") in ours and row.get("RowKey") and (t := _epoch(row.get("UpdatedAt")))
    ]
    replay.seconds = max(0.0, max(ends, default=finished_at) - replayed_at)
    return again


def _epoch(value: object) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _with_poisoned(found: list[Figures], jobs: Sequence[Job], per_job: Mapping[str, int]) -> list[Figures]:
    """Each variant's figures with the poison messages its jobs account for."""
    variant_of = {job.job_id: job.variant for job in jobs}
    return [
        replace(f, poisoned=sum(n for job_id, n in per_job.items() if variant_of.get(job_id) == f.variant))
        for f in found
    ]


def write_findings(outcome: Outcome, path: Path) -> None:
    """What a bug report needs: lost operations with their rows, objects made twice, failures;
    and the same once more after a poison replay (`findings-<key>-after-replay.json`)."""
    _write(outcome, outcome.figures, outcome.collected, path)
    if outcome.replay is not None and outcome.replayed_collected is not None:
        after = path.with_name(path.stem + "-after-replay.json")
        _write(outcome, outcome.replayed, outcome.replayed_collected, after)


def _write(outcome: Outcome, found: list[Figures], collected: Collected, path: Path) -> None:
    rows = {f"{r.get('PartitionKey')}/{r.get('RowKey')}": r for r in collected.rows}
    holds = GraphHolds(collected.creates)
    lost = [name for f in found for name in f.lost]
    kept = {"PartitionKey", "RowKey", "Status", "Attempts", "HttpStatus", "ErrorCode", "ErrorMessage", "Note"}
    failed = [
        {k: str(v) for k, v in r.items() if k in kept}
        for r in collected.rows
        if r.get("Status") in {"Failed", "Skipped"}
    ]
    replay = outcome.replay
    findings = {
        "scenario": outcome.spec.title,
        "seed": outcome.seed,
        "disturbance": collected.disturbance,
        "faultsInjected": collected.faults.get("injected", {}),
        "hostCrashes": collected.crashes,
        "poisonReplay": None
        if replay is None
        else {
            "poisoned": replay.poisoned,
            "exitCode": replay.exit_code,
            "stderr": replay.stderr,
            "reopened": replay.reopened,
            "replayed": replay.entries,
            "left": replay.left,
            "leftEntries": replay.left_entries,
        },
        "lost": [{"op": name, "row": {k: str(v) for k, v in rows.get(name, {}).items()}} for name in lost],
        "duplicates": {
            "users": collected.creates["users"]["duplicates"],
            "groups": collected.creates["groups"]["duplicates"],
            "references": collected.creates["references"]["duplicates"],
        },
        "wrongOutcomes": [
            {"op": name, "row": _row(rows, name), "atGraph": _history(collected, holds, name)}
            for f in found
            for name in f.wrong_outcomes
        ],
        "duplicateHistory": [
            {"op": name, "row": _row(rows, name), "atGraph": _history(collected, holds, name)}
            for name in _duplicated_ops(collected.creates)
        ],
        "failedOrSkipped": failed,
        "unattributedSubrequests": unattributed(collected)[:50],
    }
    path.write_text(json.dumps(findings, indent=2, default=str), encoding="utf-8")
    calls = path.with_name(path.name.replace("findings-", "calls-"))
    calls.write_text(json.dumps(collected.calls, default=str), encoding="utf-8")


def _row(rows: dict[str, dict[str, Any]], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in rows.get(name, {}).items() if k not in {"ResponseBody", "etag"}}


def _history(collected: Collected, holds: GraphHolds, name: str) -> list[dict[str, Any]]:
    job_id, op_id = name.split("/", 1)
    return history(collected, holds, job_id, op_id)


def _duplicated_ops(creates: dict[str, Any]) -> list[str]:
    """`job/op` of every user and group made more than once (their names say whose they are)."""
    names = [*creates["users"]["duplicates"], *creates["groups"]["duplicates"]["mailNickname"]]
    found = []
    for name in names:
        key = job_of(name)
        if key is not None:
            op_id = name.split("@", 1)[0][len(key) + 1 :]
            found.append(f"{key}/{op_id}")
    return found
