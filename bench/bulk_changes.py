"""Change-aware bulk updates against writing every row, under Graph-shaped limits, in one run.

    .venv/bin/python -m bench.bulk_changes            # 100,000-user tenant, 20,000-row file
    .venv/bin/python -m bench.bulk_changes --quick    # 10,000 users, 2,000 rows (a smoke run)

One Azurite and one Graph emulator (its own process) for the whole run. The emulator's tenant
is seeded with users that have HR attributes and managers (`emulator.tenant.seeded_profile`),
and Graph's identity limits are on: 20 writes/s (burst 20) and 8,000 resource units per 10 s
(a tenant over 500 users). The file names `--rows` users with the values the tenant holds,
except every 50th row (2 %), which changes one thing: a job title, or (every fourth of them)
the manager. In order, each with a fresh dev host (the process whose memory is measured):

1. **preview**: the file under `preview/`; the emulator must record 0 writes, and the preview
   must list exactly the changed users;
2. **change-aware** (the default): the file is applied; seconds from running the pickup to the
   file's summary in `processed/` (every row has its final result by then), against the time
   its writes alone need at 20/s;
3. **every row** (`BULK_CHANGE_DETECTION=false`): the same file applied the old way, timed the
   same way.

Writes `bench/results/bulk_changes.md` and `bulk_changes.png` (writes Graph received over time).
Figures are ratios between parts of the same run, so a busy machine moves them little.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import ContainerClient
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.pace.report import table
from bench.pace.stack import Emulator, peak_rss_mib, run_emulator, stop_host
from devhost.stack import Azurite, DevHost, run_azurite, start_devhost
from emulator.tenant import seeded_manager, seeded_profile
from tests.integration.helpers import run_bulk_pickup

RESULTS = Path(__file__).resolve().parent / "results"
WRITES_PER_SECOND = 20.0
LIMITS = {
    "writesPerSecond": WRITES_PER_SECOND,
    "writeBurst": 20,
    "unitsPerSecond": 800,
    "unitBurst": 8000,
    "windowSeconds": 10,
    "retryAfter": None,
}
CHANGE_EVERY = 50  # 2 % of rows change something
WAIT_SECONDS = 1800  # the longest a pickup run waits for its job (the setting's maximum)
HEADER = "userPrincipalName,jobTitle,department,officeLocation,accountEnabled,manager"


@dataclass
class Part:
    name: str
    seconds: float = 0.0
    writes: int = 0
    reads: int = 0
    read_units: int = 0
    throttled: int = 0
    peak_rss_mib: float = 0.0
    idle_rss_mib: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    write_times: list[float] = field(default_factory=list)


def build_file(rows: int) -> tuple[bytes, set[str], int]:
    """The file, the users whose rows change something, and the writes those changes need."""
    lines = [HEADER]
    changed: set[str] = set()
    for n in range(1, rows + 1):
        profile = seeded_profile(n)
        boss = seeded_manager(n)
        manager = f"user{boss}@contoso.com" if boss is not None else "#clear"
        title = profile["jobTitle"]
        if n % CHANGE_EVERY == 0:
            changed.add(f"user{n}@contoso.com")
            if (n // CHANGE_EVERY) % 4 == 0:
                manager = "user1@contoso.com"  # nobody at a multiple of 50 reports to user 1
            else:
                title = f"Senior {title}"
        lines.append(
            f"user{n}@contoso.com,{title},{profile['department']},{profile['officeLocation']},true,{manager}"
        )
    return ("\n".join(lines) + "\n").encode(), changed, len(changed)


class Control:
    """The emulator's control API."""

    def __init__(self, emulator: Emulator) -> None:
        self._client = httpx.Client(base_url=emulator.root, timeout=600)

    def reset_log_and_limits(self) -> None:
        # The call log is emptied by a reset, which also empties the tenant: so the log is
        # read from a mark instead (calls after `since`).
        self._client.put("/_emulator/config", json={"limits": LIMITS}).raise_for_status()

    def seed(self, users: int) -> None:
        self._client.post("/_emulator/reset").raise_for_status()
        self._client.post("/_emulator/seed", json={"users": users, "profile": True}).raise_for_status()

    def items(self, since: float) -> list[dict[str, Any]]:
        calls = self._client.get("/_emulator/calls", params={"kind": "batch"}).json()["calls"]
        return [{**item, "at": call["at"]} for call in calls if call["at"] >= since for item in call["items"]]

    def close(self) -> None:
        self._client.close()


def _env(azurite: Azurite, emulator: Emulator, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "PROVISIONING_QUEUE": f"bc-{suffix}",
        "WORK_QUEUE": f"bcwork-{suffix}",
        "BULK_QUEUE": f"bcbulk-{suffix}",
        "RESULTS_TABLE": f"Bc{suffix}",
        "PACING_TABLE": f"BcPacing{suffix}",
        "BULK_CONTAINER": f"bc-{suffix}",
        "BULK_SCHEDULE": "0 0 0 1 1 *",  # the bench runs the pickup itself
        "BULK_WAIT_SECONDS": str(WAIT_SECONDS),
        "GRAPH_BASE_URL": emulator.graph,
        "GRAPH_CREDENTIAL": "emulator",
        **extra,
    }


@contextmanager
def _host(env: dict[str, str], log: Path) -> Iterator[DevHost]:
    host = start_devhost(env, log)
    try:
        yield host
    finally:
        stop_host(host)


def run_part(
    name: str,
    azurite: Azurite,
    emulator: Emulator,
    control: Control,
    data: bytes,
    workdir: Path,
    **extra: str,
) -> Part:
    """Drop the file, run the pickup once, and time it until the file's result appears."""
    env = _env(azurite, emulator, **extra)
    container = ContainerClient.from_connection_string(azurite.connection_string, env["BULK_CONTAINER"])
    container.create_container()
    blob = "preview/hr.csv" if name == "preview" else "hr.csv"
    done = "preview/hr.preview.json" if name == "preview" else "processed/hr.csv.summary.json"
    container.upload_blob(blob, data)
    part = Part(name)
    with _host(env, workdir / f"devhost-{name}.log") as host:
        part.idle_rss_mib = peak_rss_mib(host.process.pid)
        since = time.time()
        started = time.monotonic()
        run_bulk_pickup(host.base_url)  # one run, which waits for its job up to BULK_WAIT_SECONDS
        next_run = started + WAIT_SECONDS + 30
        while done not in set(container.list_blob_names(name_starts_with=done.rsplit("/", 1)[0])):
            time.sleep(0.25)
            if time.monotonic() > next_run:  # the next timer tick finishes what is still running
                run_bulk_pickup(host.base_url)
                next_run = time.monotonic() + 60
        part.seconds = time.monotonic() - started
        part.peak_rss_mib = peak_rss_mib(host.process.pid)
    part.report = json.loads(container.download_blob(done).readall())
    items = control.items(since)
    writes = [item for item in items if item["method"] != "GET" and item["status"] != 429]
    part.writes = len(writes)
    part.write_times = sorted(item["at"] - since for item in writes)
    reads = [item for item in items if item["method"] == "GET"]
    part.reads = len(reads)
    part.read_units = sum(int(item.get("resourceUnits") or 0) for item in reads)
    part.throttled = sum(1 for item in items if item["status"] == 429)
    container.close()
    return part


def _writes_of_every_row(data: bytes) -> int:
    """Writes the old mode sends for the file: a PATCH per row and one per manager cell."""
    rows = data.decode().splitlines()[1:]
    return len(rows) + sum(1 for row in rows if row.rsplit(",", 1)[1])


def scaled(sample: Part, *, full_writes: int) -> Part:
    """The every-row time of the whole file from a sample: its start-up (pickup to first write)
    as measured, plus the whole file's writes at the rate the sample sustained. Writing every
    row is bound by the write limit, so its time grows with its writes."""
    first, last = sample.write_times[0], sample.write_times[-1]
    rate = (len(sample.write_times) - 1) / (last - first)
    estimate = first + full_writes / rate + (sample.seconds - last)
    return Part(
        f"every row (from {sample.writes:,} writes of a sample, scaled)",
        estimate,
        full_writes,
        sample.reads,
        sample.read_units,
        sample.throttled,
        sample.peak_rss_mib,
        sample.idle_rss_mib,
        sample.report,
        sample.write_times,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 users, 2,000 rows")
    parser.add_argument("--tenant", type=int, help="users in the tenant (100,000)")
    parser.add_argument("--rows", type=int, help="rows in the file (20,000)")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        help="write every row of only the first N rows and scale by writes (default: the whole file)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the dev hosts' and the emulator's logs here")
    args = parser.parse_args()
    tenant = args.tenant or (10_000 if args.quick else 100_000)
    rows = args.rows or (2_000 if args.quick else 20_000)
    data, changed, writes_needed = build_file(rows)
    bound = writes_needed / WRITES_PER_SECOND
    with tempfile.TemporaryDirectory() as tmp, run_azurite() as azurite:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with run_emulator(workdir / "emulator.log") as emulator:
            control = Control(emulator)
            started = time.monotonic()
            control.seed(tenant)
            print(f"seeded {tenant:,} users in {time.monotonic() - started:.0f} s", flush=True)
            control.reset_log_and_limits()
            preview = run_part("preview", azurite, emulator, control, data, workdir)
            print(f"preview: {preview.seconds:.1f} s, {preview.writes} writes", flush=True)
            control.reset_log_and_limits()
            aware = run_part("change-aware", azurite, emulator, control, data, workdir)
            print(
                f"change-aware: {aware.seconds:.1f} s, {aware.writes} writes "
                f"from {aware.write_times[0] if aware.write_times else 0:.1f} s "
                f"to {aware.write_times[-1] if aware.write_times else 0:.1f} s",
                flush=True,
            )
            control.reset_log_and_limits()
            sample = data if not args.baseline_rows else build_file(args.baseline_rows)[0]
            every = run_part(
                "every row", azurite, emulator, control, sample, workdir, BULK_CHANGE_DETECTION="false"
            )
            if args.baseline_rows:
                every = scaled(every, full_writes=_writes_of_every_row(data))
            print(f"every row: {every.seconds:.1f} s, {every.writes} writes", flush=True)
            control.close()
    listed = {change["user"] for change in preview.report.get("changes", [])}
    report(args.out, tenant, rows, changed, bound, preview, aware, every, listed)


def report(
    out: Path,
    tenant: int,
    rows: int,
    changed: set[str],
    bound: float,
    preview: Part,
    aware: Part,
    every: Part,
    listed: set[str],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header = (
        "part",
        "seconds",
        "writes received",
        "reads",
        "read units",
        "429s",
        "peak RSS of the host (MiB)",
        "result",
    )
    lines = []
    for part in (preview, aware, every):
        counts = part.report.get("counts", {})
        result = ", ".join(f"{key} {value:,}" for key, value in counts.items() if value and key != "pending")
        lines.append(
            (
                part.name,
                f"{part.seconds:.1f}",
                f"{part.writes:,}",
                f"{part.reads:,}",
                f"{part.read_units:,}",
                f"{part.throttled:,}",
                f"{part.peak_rss_mib:.0f}",
                result,
            )
        )
    checks = [
        (
            "change-aware seconds / writes-alone bound",
            aware.seconds / bound,
            "<= 1.5",
            aware.seconds / bound <= 1.5,
        ),
        (
            "every-row seconds / change-aware seconds",
            every.seconds / aware.seconds,
            ">= 10",
            every.seconds / aware.seconds >= 10,
        ),
        (
            "peak RSS of the change-aware host (MB)",
            aware.peak_rss_mib * 1.048576,
            "<= 250",
            aware.peak_rss_mib * 1.048576 <= 250,
        ),
        ("writes received during the preview", float(preview.writes), "0", preview.writes == 0),
        (
            "users the preview lists = users changed",
            float(len(listed)),
            f"{len(changed)} (the same)",
            listed == changed,
        ),
    ]
    text = [
        "# Change-aware bulk updates",
        "",
        f"Tenant {tenant:,} users; file {rows:,} rows, {len(changed):,} change something "
        f"({len(changed):,} writes); Graph's limits: {WRITES_PER_SECOND:.0f} writes/s, 8,000 units / 10 s. "
        f"Bound: the changed rows' writes alone at {WRITES_PER_SECOND:.0f}/s = {bound:.1f} s.",
        "",
        *table(header, lines),
        "",
        *table(
            ("measure", "value", "target", "result"),
            [(name, f"{value:.2f}", target, "PASS" if ok else "FAIL") for name, value, target, ok in checks],
        ),
        "",
        "Seconds: from running the pickup to the file's summary in `processed/` (the preview: its JSON).",
        "Writes, reads, units and 429s from the emulator's call log; peak RSS is the dev host's VmHWM.",
        "",
    ]
    (out / "bulk_changes.md").write_text("\n".join(text))
    print("\n".join(text))
    _plot(out / "bulk_changes.png", aware, every, bound)


def _plot(path: Path, aware: Part, every: Part, bound: float) -> None:
    """Left: writes Graph received over time (log scales, so both modes show). Right: seconds."""
    figure = Figure(figsize=(11, 4.5))
    writes, seconds = figure.subplots(1, 2, width_ratios=(3, 2))
    for part, style in ((aware, "-"), (every, "--")):
        times = [0.0, *part.write_times]
        writes.step(
            times, range(len(times)), where="post", linestyle=style, label=f"{part.name}: {part.writes:,}"
        )
    top = max(every.writes, aware.writes)
    line = [t for t in (0.5, 1, 10, 100, 1000, 10000) if t <= top / WRITES_PER_SECOND] + [
        top / WRITES_PER_SECOND
    ]
    writes.plot(
        line, [t * WRITES_PER_SECOND for t in line], linestyle=":", color="black", label="20 writes/s"
    )
    writes.set_xscale("symlog", linthresh=1)
    writes.set_yscale("symlog", linthresh=10)
    writes.set_xlabel("seconds since the pickup ran")
    writes.set_ylabel("writes Graph received")
    writes.legend(loc="upper left", fontsize="small")
    names = ("bound: changed\nrows at 20/s", "change-aware", "every row")
    values = (bound, aware.seconds, every.seconds)
    bars = seconds.bar(names, values, color=("grey", "tab:blue", "tab:orange"))
    seconds.bar_label(bars, labels=[f"{value:,.0f} s" for value in values])
    seconds.set_yscale("log")
    seconds.set_ylabel("seconds until every row has its result")
    figure.suptitle("The same file, written only where it changes and written whole")
    figure.tight_layout()
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
