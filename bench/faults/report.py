"""The fault suite's figures as Markdown: one line per scenario and group variant, then what
each line is made of, and every check that failed."""

from __future__ import annotations

from collections.abc import Sequence

from bench.faults.figures import Figures
from bench.faults.scenarios import Outcome
from bench.pace.report import table

COLUMNS = (
    "scenario",
    "groups",
    "operations",
    "final rows",
    "lost",
    "duplicates",
    "poisoned",
    "max attempts",
    "subrequests sent",
    "seconds",
)
DETAIL_COLUMNS = (
    "scenario",
    "groups",
    "outcomes",
    "made twice: users / groups / member refs",
    "found already done",
    "groups created",
    "member refs Graph accepted",
    "Failed or Skipped, though Graph did it",
    "outcomeUnknown: Graph did it / did not",
    "most attempts",
)
MAX_ATTEMPTS = 8  # the app's default; the runs do not change it
NOTES = (
    "final rows: operations whose row is final (Succeeded, Failed, Skipped); Table storage keeps "
    "one row per operation, checked by counting the rows of each key. lost: operations without a "
    "final row when the work ended or stalled for 3 minutes.",
    "duplicates: extra users per userPrincipalName, extra groups per mailNickname (every object has "
    "a name of its own), and member references Graph carried out more than once per (group, member), "
    "counted from what the emulator's tenant holds and did, including work behind a lost answer.",
    'found already done: rows Succeeded with the note "already existed": a resend that Graph '
    'answered "exists" and the app read back.',
    "Failed or Skipped, though Graph did it: rows Failed (other than outcomeUnknown) or Skipped (which "
    "says the operation was never sent) whose user, group or "
    "member reference the tenant holds: an outcome recorded wrong. outcomeUnknown rows are split by "
    "whether Graph in fact did the work (it never did: the claim was taken but the send never left).",
    "max attempts: the highest `Attempts` of any row; subrequests sent: items in every call Graph "
    "received for these jobs (also the ones refused or cut), against operations.",
    "seconds: from the first submission to the last final row (both variants run together).",
    "poisoned: messages of these jobs on the poison queues once the work had settled (the app's "
    "queues drained), as the CLI's `poison replay` found them. When there are any, the operator's "
    "response follows: `python -m batching poison replay` with the scenario's settings and its host "
    'running, and the work settles again; the line "after poison replay" counts everything '
    "cumulatively (rows, tenant, call log) at that point, its poisoned column the messages poisoned "
    "again, and its seconds run from the first submission to the last final row after the replay.",
    "groups: `uniqueName` jobs give every group a uniqueName (a create that can be made safe to "
    "repeat); `no uniqueName` jobs give none, so a create whose outcome is unknown cannot be "
    "checked: the app should end it Failed (outcomeUnknown) rather than send it again.",
)


def check_failures(f: Figures) -> list[str]:
    problems = []
    if f.final_rows != f.operations:
        problems.append(f"{f.operations - f.final_rows} operations without a final row")
    if f.most_rows_per_op > 1:
        problems.append(f"up to {f.most_rows_per_op} rows for one operation")
    if f.stray_rows:
        problems.append(f"{f.stray_rows} rows naming no operation")
    if f.duplicates:
        problems.append(
            f"made twice: {f.duplicate_users} users, {f.duplicate_groups} groups, "
            f"{f.duplicate_references} member references"
        )
    if f.wrong_outcomes:
        problems.append(
            f"{len(f.wrong_outcomes)} operations recorded Failed or Skipped although Graph holds their work "
            f"({', '.join(f.wrong_outcomes[:5])}{' ...' if len(f.wrong_outcomes) > 5 else ''})"
        )
    if f.max_attempts > MAX_ATTEMPTS:
        problems.append(f"an operation sent {f.max_attempts} times (MAX_ATTEMPTS {MAX_ATTEMPTS})")
    if f.timed_out:
        problems.append("the wait gave up")
    if f.after_replay and f.poisoned:
        problems.append(f"{f.poisoned} messages on the poison queues again after the replay")
    return problems


def replay_failures(outcome: Outcome) -> list[str]:
    """What went wrong with the operator's `poison replay` itself."""
    replay = outcome.replay
    if replay is None:
        return []
    key, problems = outcome.spec.key, []
    if replay.exit_code != 0:
        problems.append(f"{key}: `poison replay` exited with {replay.exit_code}: {replay.stderr[-300:]}")
    if len(replay.entries) < replay.messages:
        problems.append(f"{key}: `poison replay` sent back {len(replay.entries)} of {replay.messages}")
    return problems


def scenario_cell(f: Figures, *, short: bool = False) -> str:
    name = f.scenario.split(" ", 1)[0].rstrip(".") if short else f.scenario
    return f"{name}, after poison replay" if f.after_replay else name


def outcomes_cell(f: Figures) -> str:
    parts = [
        f"{f.statuses.get(status, 0):,} {status.lower()}" for status in ("Succeeded", "Failed", "Skipped")
    ]
    if f.failure_codes:
        codes = ", ".join(f"{code} {count}" for code, count in f.failure_codes.most_common())
        parts[1] += f" ({codes})"
    return "; ".join(parts)


def main_cells(f: Figures) -> list[str]:
    ratio = f.subrequests / f.operations if f.operations else 0.0
    return [
        scenario_cell(f),
        f.variant,
        f"{f.operations:,}",
        f"{f.final_rows:,}",
        f"{len(f.lost):,}",
        f"{f.duplicates:,}",
        f"{f.poisoned:,}",
        str(f.max_attempts),
        f"{f.subrequests:,} ({ratio:.2f}/op)",
        f"{f.seconds:.0f}" + (" (gave up)" if f.timed_out else ""),
    ]


def detail_cells(f: Figures) -> list[str]:
    return [
        scenario_cell(f, short=True),
        f.variant,
        outcomes_cell(f),
        f"{f.duplicate_users} / {f.duplicate_groups} / {f.duplicate_references}",
        f"{f.already_existed:,}",
        f"{f.groups_created:,} for {f.operations // 10:,} group creates",
        f"{f.references_accepted:,} for {f.operations // 2:,} references",
        f"{len(f.wrong_outcomes):,}",
        f"{f.unknown_done:,} / {f.unknown_not_done:,}",
        ", ".join(f.worst),
    ]


def markdown(
    outcomes: Sequence[Outcome], preamble: Sequence[str], wall_seconds: float, errors: Sequence[str] = ()
) -> str:
    every = [f for outcome in outcomes for f in outcome.every]
    lines = ["# Fault suite", "", *preamble, ""]
    lines += [*table(COLUMNS, [main_cells(f) for f in every]), ""]
    lines += [f"Wall time of the whole run: {wall_seconds / 60:.1f} min.", ""]
    lines += ["## What each line is made of", ""]
    lines += [*table(DETAIL_COLUMNS, [detail_cells(f) for f in every]), ""]
    lines += ["## Faults and disturbances, per scenario", ""]
    for outcome in outcomes:
        injected = outcome.collected.faults.get("injected") or {}
        faults = ", ".join(f"{name} {count}" for name, count in injected.items()) or "none"
        crashes = (
            f"; hosts that exited on their own: {', '.join(outcome.collected.crashes)}"
            if outcome.collected.crashes
            else ""
        )
        replay = f"; poison: {outcome.replay.describe()}" if outcome.replay else "; poison: none"
        lines.append(
            f"- {outcome.spec.key} (seed {outcome.seed}): Graph faults injected: {faults}; "
            f"disturbance: {outcome.collected.disturbance}{crashes}{replay}."
        )
    lines += ["", "## Checks", ""]
    failed = [(f, problems) for f in every if (problems := check_failures(f))]
    errors = [*errors, *(problem for outcome in outcomes for problem in replay_failures(outcome))]
    lines += [f"- FAIL {error}" for error in errors]
    if not failed and not errors:
        lines.append("Every operation has exactly one final row, none is lost, nothing was made twice.")
    for f, problems in failed:
        lost = f" Lost: {', '.join(f.lost[:10])}{' ...' if len(f.lost) > 10 else ''}." if f.lost else ""
        lines.append(f"- FAIL {scenario_cell(f)} / {f.variant}: {'; '.join(problems)}.{lost}")
    lines += ["", *(f"- {note}" for note in NOTES)]
    return "\n".join(lines) + "\n"
