"""The operator CLI, `python -m batching ...`: the same queue, table and container as the app.

Settings are the app's own (environment variables). When the environment names no storage at
all, `local.settings.json` (or, on a fresh clone, the sample) in the current folder fills them
in, so the CLI talks to the local stack that `scripts/start` runs.

Exit codes: 0 done and succeeded, 1 done but not every operation succeeded (or no such job),
2 the input or the settings are invalid, 3 still running when `--timeout` ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batching.bulk.changes import NO_CHANGE
from batching.bulk.current import ReadFailed
from batching.bulk.pickup import FileReport, hash_local, open_local, result_counts
from batching.bulk.preview import PreviewResult, shown, write_preview
from batching.bulk.reader import UnreadableFile
from batching.errors import problems_from_validation
from batching.records import JobStatus, JobSummary, OperationRecord
from batching.replay import PoisonEntry, PoisonReplay
from batching.service import Accepted, Conflict, Invalid, ProvisioningService
from batching.settings import Settings, load_local_settings

EXIT_OK: Final = 0
EXIT_NOT_ALL_SUCCEEDED: Final = 1
EXIT_INVALID: Final = 2
EXIT_STILL_RUNNING: Final = 3
_TABLE_ROWS: Final = 50
_STORAGE_SETTINGS: Final = (
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__queueServiceUri",
)

out = Console()
err = Console(stderr=True)

Command = Callable[[argparse.Namespace, ProvisioningService], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not any(name in os.environ for name in _STORAGE_SETTINGS):
        load_local_settings(Path.cwd())
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in problems_from_validation(error):
            err.print(f"[red]setting {problem.field}[/]: {problem.message}")
        return EXIT_INVALID
    command: Command = args.command
    return asyncio.run(_run(command, args, settings))


async def _run(command: Command, args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        return await command(args, service)


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[ProvisioningService]:
    # Not watched for the trigger: the operator CLI's people may not read the subscriptions.
    service = ProvisioningService.create(settings, watch_bulk=False)
    try:
        await service.ensure_resources()
        yield service
    finally:
        await service.aclose()


# --- commands ---------------------------------------------------------------------------------


async def submit(args: argparse.Namespace, service: ProvisioningService) -> int:
    """A JSON job (as POST /api/jobs takes it) or a bulk CSV file; then follow it to the end."""
    path = Path(args.file)
    if not await asyncio.to_thread(path.is_file):
        err.print(f"[red]{path}: no such file")
        return EXIT_INVALID
    if path.suffix.lower() == ".csv":
        try:
            summary = await service.bulk.importer.enqueue(
                open_local(str(path)), name=path.name, sha256=await asyncio.to_thread(hash_local, str(path))
            )
        except UnreadableFile as error:
            err.print(f"[red]{path.name} cannot be applied:[/] {error}")
            return EXIT_INVALID
    else:
        result = await service.submit(await asyncio.to_thread(path.read_bytes))
        if isinstance(result, Invalid):
            err.print(f"[red]{path.name} is not a valid job:")
            for problem in result.problems:
                err.print(f"  {problem.field}: {problem.message}")
            return EXIT_INVALID
        if isinstance(result, Conflict):
            err.print(f"[red]jobId {result.job_id!r} already names a different job")
            return EXIT_INVALID
        summary = _accepted(result)
    err.print(f"job [bold]{summary.job_id}[/] with {summary.total} operations is on the queue")
    if args.no_wait:
        out.print(summary.job_id)
        return EXIT_OK
    final = await _follow(service, summary, args.timeout)
    _print_job(final, await service.store.failures(final.job_id))
    if not final.done:
        return EXIT_STILL_RUNNING
    return EXIT_OK if final.status is JobStatus.SUCCEEDED else EXIT_NOT_ALL_SUCCEEDED


async def status(args: argparse.Namespace, service: ProvisioningService) -> int:
    summary = await service.store.refresh_summary(args.job_id)
    if summary is None:
        err.print(f"[red]no job {args.job_id!r}")
        return EXIT_NOT_ALL_SUCCEEDED
    if args.json:
        operations = await service.store.operations(args.job_id)
        print(json.dumps(_job_json(summary, operations), indent=2, default=str))
        return EXIT_OK
    shown = (
        await service.store.operations(args.job_id)
        if summary.total <= _TABLE_ROWS
        else await service.store.failures(args.job_id)
    )
    _print_job(summary, shown)
    if summary.source == "bulk":
        counts = result_counts(summary, await service.store.count_noted(args.job_id, NO_CHANGE))
        kinds = ("changed", "unchanged", "failed", "rejected")
        out.print(", ".join(f"{name} {counts[name]:,}" for name in kinds))
    return EXIT_OK


async def failures(args: argparse.Namespace, service: ProvisioningService) -> int:
    summary = await service.store.get_summary(args.job_id)
    if summary is None:
        err.print(f"[red]no job {args.job_id!r}")
        return EXIT_NOT_ALL_SUCCEEDED
    records = await service.store.failures(args.job_id)
    if args.json:
        print(json.dumps([record.to_json() for record in records], indent=2, default=str))
    elif records:
        out.print(_operations_table(records, limit=None))
    else:
        out.print(f"job {args.job_id}: no failed, skipped or rejected operations")
    return EXIT_OK


async def poison_list(args: argparse.Namespace, service: ProvisioningService) -> int:
    listed = [(queue, await PoisonReplay(service.store, queue).entries()) for queue in service.queues.all()]
    if args.json:
        print(json.dumps([entry.to_json() for _, entries in listed for entry in entries], indent=2))
        return EXIT_OK
    for queue, entries in listed:
        if entries:
            out.print(_poison_table(entries, f"{queue.poison_name} (up to 32 shown)"))
        else:
            out.print(f"{queue.poison_name} is empty")
    return EXIT_OK


async def poison_replay(args: argparse.Namespace, service: ProvisioningService) -> int:
    wanted = set(args.id) if args.id else None
    replayed = []
    for queue in service.queues.all():
        sent_back = await PoisonReplay(service.store, queue).replay(wanted)
        if sent_back and not args.json:
            out.print(_poison_table(sent_back, f"sent back to {queue.name}"))
        replayed.extend(sent_back)
    if args.json:
        print(json.dumps([entry.to_json() for entry in replayed], indent=2))
    elif not replayed:
        out.print("nothing replayed")
    missing = (wanted or set()) - {entry.message_id for entry in replayed}
    for message_id in sorted(missing):
        err.print(f"[yellow]no poison message {message_id!r}")
    return EXIT_NOT_ALL_SUCCEEDED if missing else EXIT_OK


async def bulk_run(args: argparse.Namespace, service: ProvisioningService) -> int:
    if args.wait is not None:
        service.bulk.wait_seconds = args.wait
    reports = await service.bulk.run_once()
    if args.json:
        print(json.dumps([report.to_json() for report in reports], indent=2))
    elif reports:
        out.print(_bulk_table(reports, service.settings.bulk_container))
    else:
        out.print(f"no new CSV files in {service.settings.bulk_container}")
    return EXIT_INVALID if any(report.outcome == "failed" for report in reports) else EXIT_OK


async def bulk_preview(args: argparse.Namespace, service: ProvisioningService) -> int:
    """Compare a local CSV with Graph and write `<name>.preview.csv` and `.json` beside it;
    nothing is written to Graph."""
    path = Path(args.file)
    if not await asyncio.to_thread(path.is_file):
        err.print(f"[red]{path}: no such file")
        return EXIT_INVALID
    directory = service.bulk.directory
    if directory is None:
        err.print("[red]this configuration has no Graph access for previews")
        return EXIT_INVALID
    stem = path.with_suffix("") if path.suffix.lower() == ".csv" else path
    csv_path, json_path = Path(f"{stem}.preview.csv"), Path(f"{stem}.preview.json")
    csv_out = await asyncio.to_thread(csv_path.open, "w", encoding="utf-8", newline="")
    json_out = await asyncio.to_thread(json_path.open, "w", encoding="utf-8")
    try:
        result = await write_preview(
            open_local(str(path)),
            directory,
            name=path.name,
            sha256=await asyncio.to_thread(hash_local, str(path)),
            csv_out=csv_out,
            json_out=json_out,
        )
    except (UnreadableFile, ReadFailed) as error:
        err.print(f"[red]{path.name} cannot be previewed:[/] {error}")
        return EXIT_INVALID
    finally:
        csv_out.close()
        json_out.close()
    if args.json:
        print(await asyncio.to_thread(json_path.read_text, encoding="utf-8"))
        return EXIT_OK
    out.print(_preview_table(path.name, result))
    if result.sample:
        out.print(_changes_table(result))
    out.print(f"read by {result.plan.describe()}")
    out.print(f"written: {csv_path} and {json_path}")
    return EXIT_OK


# --- following a job ------------------------------------------------------------------------


async def _follow(service: ProvisioningService, summary: JobSummary, seconds: float) -> JobSummary:
    """A progress bar on stderr until the job is done (the app's queue trigger does the work)."""
    deadline = time.monotonic() + seconds
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(summary.job_id, total=summary.total)
        while True:
            summary = await service.store.refresh_summary(summary.job_id) or summary
            finished = sum(count for state, count in summary.counts.items() if state.is_final)
            progress.update(task, completed=finished)
            if summary.done or time.monotonic() >= deadline:
                return summary
            await asyncio.sleep(1.0)


def _accepted(result: Accepted) -> JobSummary:
    if not result.created:
        err.print("[yellow]the same job was submitted before; following it")
    return result.summary


# --- rendering --------------------------------------------------------------------------------


def _job_json(summary: JobSummary, operations: list[OperationRecord]) -> dict[str, Any]:
    return {
        "jobId": summary.job_id,
        "status": summary.status.value,
        "total": summary.total,
        "counts": summary.counts_json(),
        "source": summary.source,
        "correlationId": summary.correlation_id,
        "reason": summary.reason,
        "createdAt": summary.created_at,
        "operations": [record.to_json() for record in operations],
    }


def _print_job(summary: JobSummary, records: list[OperationRecord]) -> None:
    counts = ", ".join(f"{name} {count}" for name, count in summary.counts_json().items() if count)
    out.print(f"job [bold]{summary.job_id}[/]: [bold]{summary.status.value}[/] ({counts or 'no operations'})")
    if summary.correlation_id:
        out.print(f"correlation: {summary.correlation_id}   source: {summary.source}")
    if summary.reason:
        out.print(f"reason: {summary.reason}")
    if records:
        out.print(_operations_table(records, limit=_TABLE_ROWS))
    if summary.total > _TABLE_ROWS and records:
        out.print(f"all failures: python -m batching failures {summary.job_id}")


def _operations_table(records: list[OperationRecord], *, limit: int | None) -> Table:
    table = Table("id", "status", "http", "tries", "request", "error")
    for record in records[:limit]:
        error = " ".join(part for part in (record.error_code, record.error_message) if part)
        table.add_row(
            record.op_id,
            record.status.value,
            str(record.http_status or ""),
            str(record.attempts),
            f"{record.method} {record.url}".strip(),
            error or (record.note or ""),
        )
    if limit is not None and len(records) > limit:
        table.caption = f"{len(records) - limit} more not shown"
    return table


def _poison_table(entries: list[PoisonEntry], title: str) -> Table:
    table = Table("message id", "inserted", "kind", "job", "ops", "job status", "reason / text", title=title)
    for entry in entries:
        table.add_row(
            entry.message_id,
            entry.inserted_on.strftime("%Y-%m-%d %H:%M:%S") if entry.inserted_on else "",
            entry.kind,
            entry.job_id or "",
            str(entry.operations),
            entry.job_status or "",
            entry.reason or entry.preview,
        )
    return table


def _preview_table(name: str, result: PreviewResult) -> Table:
    counts = result.counts
    table = Table("rows", "changed", "unchanged", "not found", "rejected", title=f"preview of {name}")
    table.add_row(
        *(
            f"{value:,}"
            for value in (counts.rows, counts.changed, counts.unchanged, counts.not_found, counts.rejected)
        )
    )
    return table


def _changes_table(result: PreviewResult) -> Table:
    table = Table("line", "user", "property", "current", "new")
    for row_plan in result.sample:
        for change in row_plan.changes:
            table.add_row(
                str(row_plan.row.line),
                row_plan.row.user,
                change.name,
                shown(change.current),
                shown(change.new),
            )
    if result.counts.changed > len(result.sample):
        table.caption = (
            f"first {len(result.sample)} of {result.counts.changed:,} changed users; all in the preview files"
        )
    return table


def _bulk_table(reports: list[FileReport], container: str) -> Table:
    table = Table("file", "outcome", "job", "status", "detail", title=container)
    for report in reports:
        detail = report.reason or ""
        if report.applied_as:
            detail = f"{detail}: applied as {report.applied_as}"
        elif report.counts:
            detail = ", ".join(f"{name} {count}" for name, count in report.counts.items() if count)
        table.add_row(report.file, report.outcome, report.job_id or "", report.status or "", detail)
    return table


# --- arguments --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batching",
        description="Operate the Graph provisioning processor: submit work, follow jobs, "
        "look at failures, replay the poison queue, run the bulk pickup now or preview a file.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    submit_cmd = commands.add_parser("submit", help="submit a JSON job or a bulk CSV file and follow it")
    submit_cmd.add_argument("file", help="a .json job (as POST /api/jobs takes it) or a .csv of user updates")
    submit_cmd.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit_cmd.add_argument("--timeout", type=float, default=3600, help="seconds to follow the job (3600)")
    submit_cmd.set_defaults(command=submit)

    for name, function, text in (
        ("status", status, "a job's status and its operations (failures only for large jobs)"),
        ("failures", failures, "a job's failed, skipped and rejected operations"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id", metavar="JOBID")
        command.add_argument("--json", action="store_true", help="JSON instead of a table")
        command.set_defaults(command=function)

    poison = commands.add_parser("poison", help="the poison queue").add_subparsers(
        required=True, metavar="ACTION"
    )
    listing = poison.add_parser("list", help="show poison messages with their job and reason")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(command=poison_list)
    replay = poison.add_parser("replay", help="send poison messages back, unchanged (they keep their jobIds)")
    replay.add_argument("--id", action="append", help="only this message id (repeatable); default: all")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(command=poison_replay)

    bulk = commands.add_parser("bulk", help="bulk CSV pickup").add_subparsers(required=True, metavar="ACTION")
    run = bulk.add_parser("run", help="run the bulk pickup once now, as the timer does")
    run.add_argument("--wait", type=float, help="seconds to wait for the jobs (default BULK_WAIT_SECONDS)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(command=bulk_run)
    preview = bulk.add_parser(
        "preview",
        help="compare a CSV with Graph and write FILE.preview.csv and .json; nothing is written to Graph",
    )
    preview.add_argument("file", help="a .csv of user updates")
    preview.add_argument("--json", action="store_true", help="print the preview JSON instead of tables")
    preview.set_defaults(command=bulk_preview)
    return parser
