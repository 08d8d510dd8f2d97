"""The figures of a fault run, per group variant: rows per operation, lost operations, objects
made twice, attempts and subrequests, from the results table, the emulator's call log and what
its tenant holds."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.faults.run import FINAL, Collected
from bench.faults.workload import DOMAIN, REFERENCES, Job, Variant, job_of

OUTCOME_UNKNOWN = "outcomeUnknown"  # the app's honest "Graph may or may not have done it"


@dataclass(frozen=True)
class Figures:
    scenario: str
    variant: Variant
    operations: int
    final_rows: int  # operations whose one row is final
    most_rows_per_op: int  # Table storage keeps one row per key: anything but 1 is a finding
    stray_rows: int  # rows of these jobs naming no operation of theirs
    lost: list[str]  # "job/op" without a final row
    duplicate_users: int
    duplicate_groups: int
    duplicate_references: int
    groups_created: int
    references_accepted: int
    max_attempts: int
    subrequests: int
    seconds: float
    timed_out: bool
    statuses: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    worst: list[str] = field(default_factory=list)  # op ids with the most attempts
    # Failed (not outcomeUnknown) or Skipped ("never sent"), yet Graph holds the work
    wrong_outcomes: list[str] = field(default_factory=list)
    already_existed: int = 0  # Succeeded with the note "already existed": found done behind a lost answer
    unknown_done: int = 0  # Failed outcomeUnknown, and Graph holds the work
    unknown_not_done: int = 0  # Failed outcomeUnknown, and Graph never did it
    # Messages of these jobs on the poison queues when the work settled (for figures taken after a
    # `poison replay`: the ones still there once the work settled again).
    poisoned: int = 0
    after_replay: bool = False  # figures taken once the work settled again after `poison replay`

    @property
    def duplicates(self) -> int:
        return self.duplicate_users + self.duplicate_groups + self.duplicate_references


def _extra(counts: Mapping[str, int], keys: Iterable[str]) -> int:
    wanted = set(keys)
    return sum(count - 1 for key, count in counts.items() if key in wanted and count > 1)


def _updated(row: Mapping[str, Any]) -> float | None:
    value = row.get("UpdatedAt")
    return value.timestamp() if isinstance(value, datetime) else None


class GraphHolds:
    """What the tenant holds, by the names the workload gives: is an operation's work done?"""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.users = {str(u["userPrincipalName"]).lower(): str(u["id"]) for u in report["users"]["objects"]}
        self.groups: dict[str, set[str]] = {}
        for g in report["groups"]["objects"]:
            self.groups.setdefault(str(g.get("mailNickname")).lower(), set()).add(str(g["id"]))
        self.references = set(report["references"]["accepted"])

    def ids(self, key: str, name: str) -> set[str]:
        if name.startswith("u"):
            found = self.users.get(f"{key}-{name}@{DOMAIN}".lower())
            return {found} if found else set()
        return self.groups.get(f"{key}-{name}".lower(), set())

    def done(self, key: str, op_id: str) -> bool:
        if op_id.startswith("m"):
            member, into = REFERENCES[int(op_id[1:]) - 1]
            return any(
                f"{group}|members|{object_id}" in self.references
                for group in self.ids(key, into)
                for object_id in self.ids(key, member)
            )
        return bool(self.ids(key, op_id))


def history(collected: Collected, holds: GraphHolds, key: str, op_id: str) -> list[dict[str, Any]]:
    """Every subrequest Graph received for one operation (and its read-backs), oldest first:
    when, the call's fault, method, URL, what the caller got and what the tenant did."""
    if op_id.startswith("m"):
        member, into = REFERENCES[int(op_id[1:]) - 1]
        needles = [f"/groups/{g}/" for g in holds.ids(key, into)]
        members = holds.ids(key, member)
    else:
        suffix = f"@{DOMAIN}" if op_id.startswith("u") else ""
        needles, members = [f"{key}-{op_id}{suffix}".lower()], set()
    found = []
    for call in collected.calls:
        for item in call.get("items") or []:
            text = f"{item.get('url')} {json.dumps(item.get('body'))}".lower()
            if any(n.lower() in text for n in needles) and (not members or any(m in text for m in members)):
                found.append(
                    {
                        "at": round(float(call.get("at", 0)) - collected.started_at, 2),
                        "call": call.get("fault") or call.get("status"),
                        "method": item.get("method"),
                        "url": item.get("url"),
                        "status": item.get("status"),
                        "tenantStatus": item.get("tenantStatus"),
                    }
                )
    return sorted(found, key=lambda entry: float(entry["at"]))


def attribute(item: Mapping[str, Any], group_jobs: Mapping[str, str]) -> str | None:
    """The job key a logged subrequest belongs to: named in its URL or body, or by the group
    its URL addresses (a member reference)."""
    text = f"{item.get('url')} {json.dumps(item.get('body'))}"
    key = job_of(text)
    if key is not None:
        return key
    url = str(item.get("url") or "")
    parts = url.split("/")
    if len(parts) > 2 and parts[1].lower() == "groups":
        return group_jobs.get(parts[2])
    return None


def figures(scenario: str, collected: Collected) -> list[Figures]:
    report = collected.creates
    group_objects = report["groups"]["objects"]
    group_jobs = {
        str(g["id"]): key
        for g in group_objects
        if (key := job_of(str(g.get("mailNickname") or ""))) is not None
    }
    sent: Counter[str] = Counter()
    for call in collected.calls:
        for item in call.get("items") or []:
            sent[attribute(item, group_jobs) or ""] += 1
    by_job = {job.job_id: job for job in collected.jobs}
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in collected.rows:
        if row.get("PartitionKey") in by_job and row.get("RowKey"):
            rows.setdefault(str(row["PartitionKey"]), []).append(row)
    holds = GraphHolds(report)
    results = []
    for variant in sorted({job.variant for job in collected.jobs}, key=lambda v: v != "uniqueName"):
        jobs = [job for job in collected.jobs if job.variant == variant]
        results.append(
            _variant_figures(scenario, variant, jobs, rows, report, group_jobs, sent, collected, holds)
        )
    return results


def _variant_figures(
    scenario: str,
    variant: Variant,
    jobs: list[Job],
    rows: Mapping[str, list[dict[str, Any]]],
    report: Mapping[str, Any],
    group_jobs: Mapping[str, str],
    sent: Counter[str],
    collected: Collected,
    holds: GraphHolds,
) -> Figures:
    keys = {job.key for job in jobs}
    key_of = {job.job_id: job.key for job in jobs}
    per_op: Counter[tuple[str, str]] = Counter()
    final: dict[tuple[str, str], dict[str, Any]] = {}
    stray = 0
    for job in jobs:
        op_ids = {str(op["id"]) for op in job.operations}
        for row in rows.get(job.job_id, []):
            key = (job.job_id, str(row["RowKey"]))
            if key[1] not in op_ids:
                stray += 1
                continue
            per_op[key] += 1
            if row.get("Status") in FINAL:
                final[key] = row
    expected = [(job.job_id, str(op["id"])) for job in jobs for op in job.operations]
    lost = [f"{job_id}/{op_id}" for job_id, op_id in expected if (job_id, op_id) not in final]
    users = report["users"]["duplicates"]
    groups = report["groups"]["duplicates"]["mailNickname"]
    references = report["references"]
    attempts = sorted(
        ((int(row.get("Attempts") or 0), f"{job_id}/{op_id}") for (job_id, op_id), row in final.items()),
        reverse=True,
    )
    unknown = [k for k, row in final.items() if row.get("ErrorCode") == OUTCOME_UNKNOWN]
    ends = [t for row in final.values() if (t := _updated(row)) is not None]
    finished = max(ends) if ends and not lost else collected.finished_at
    return Figures(
        scenario=scenario,
        variant=variant,
        operations=len(expected),
        final_rows=len(final),
        most_rows_per_op=max(per_op.values(), default=0),
        stray_rows=stray,
        lost=lost,
        duplicate_users=_extra(users, (k for k in users if job_of(k) in keys)),
        duplicate_groups=_extra(groups, (k for k in groups if job_of(k) in keys)),
        duplicate_references=sum(
            count - 1
            for pair, count in references["duplicates"].items()
            if group_jobs.get(pair.split("|", 1)[0]) in keys
        ),
        groups_created=sum(
            1 for g in report["groups"]["objects"] if job_of(str(g.get("mailNickname"))) in keys
        ),
        references_accepted=sum(
            count
            for pair, count in references["accepted"].items()
            if group_jobs.get(pair.split("|", 1)[0]) in keys
        ),
        max_attempts=attempts[0][0] if attempts else 0,
        subrequests=sum(count for key, count in sent.items() if key in keys),
        seconds=max(0.0, finished - collected.started_at),
        timed_out=collected.timed_out,
        statuses=Counter(str(row.get("Status")) for row in final.values()),
        failure_codes=Counter(
            str(row.get("ErrorCode") or row.get("HttpStatus") or "?")
            for row in final.values()
            if row.get("Status") == "Failed"
        ),
        worst=[f"{name} ({count})" for count, name in attempts[:3]],
        already_existed=sum(1 for row in final.values() if row.get("Note") == "already existed"),
        unknown_done=sum(1 for job_id, op_id in unknown if holds.done(key_of[job_id], op_id)),
        unknown_not_done=sum(1 for job_id, op_id in unknown if not holds.done(key_of[job_id], op_id)),
        wrong_outcomes=sorted(
            f"{job_id}/{op_id}"
            for (job_id, op_id), row in final.items()
            if row.get("Status") in {"Failed", "Skipped"}
            and row.get("ErrorCode") != OUTCOME_UNKNOWN
            and holds.done(key_of[job_id], op_id)
        ),
    )


def unattributed(collected: Collected) -> list[Mapping[str, Any]]:
    """Logged subrequests no job of the run can be found for (expected: none)."""
    group_jobs = {
        str(g["id"]): key
        for g in collected.creates["groups"]["objects"]
        if (key := job_of(str(g.get("mailNickname") or ""))) is not None
    }
    return [
        item
        for call in collected.calls
        for item in call.get("items") or []
        if attribute(item, group_jobs) is None
    ]
