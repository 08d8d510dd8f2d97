"""Peak memory of a bulk run: a 100,000-row file against a 1,000-row baseline, in one run.

    .venv/bin/python -m bench.bulk_memory [--rows 100000] [--baseline-rows 1000]

Starts Azurite and the Graph emulator, then for each file a fresh dev host; drops the file in
the bulk container, runs the timer function once, waits until the file is in `processed/`, and
reads the dev host's peak resident memory (VmHWM) from /proc. The dev host does everything
the app does in Azure: download, count, record and enqueue, run every $batch, move the file.
Memory that stays flat shows as a ratio near 1 although the file is 100 times larger.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from azure.storage.blob import ContainerClient

from devhost.stack import Azurite, ServedEmulator, run_azurite, serve_emulator, start_devhost
from tests.integration.helpers import run_bulk_pickup

# The timer's schedule, shortened: a run that stopped (storage error) or whose job was still
# running when its wait ended is picked up by the next tick, as in Azure.
TIMER_PERIOD_SECONDS = 60


def _csv(rows: int) -> bytes:
    lines = ["userPrincipalName,jobTitle,department,officeLocation,accountEnabled"]
    lines += [
        f"user{n}@contoso.com,Title {n},Dept {n % 50},Building {n % 9},true" for n in range(1, rows + 1)
    ]
    return ("\n".join(lines) + "\n").encode()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(azurite: Azurite, graph: ServedEmulator, rows: int, workdir: Path) -> dict[str, float]:
    graph.emulator.reset()
    graph.emulator.tenant.seed_users(rows)
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "PROVISIONING_QUEUE": f"bench-{suffix}",
        "RESULTS_TABLE": f"Bench{suffix}",
        "BULK_CONTAINER": f"bulk-{suffix}",
        "BULK_SCHEDULE": "0 0 0 1 1 *",
        "BULK_WAIT_SECONDS": "50",
        "GRAPH_BASE_URL": graph.base_url,
        "GRAPH_CREDENTIAL": "emulator",
        # The emulator's limits are off: memory, not Graph's pace, is measured (the default
        # budget of 19.5 writes/s would make 100,000 rows take 85 minutes).
        "GRAPH_WRITES_PER_SECOND": "1000",
    }
    data = _csv(rows)
    container = ContainerClient.from_connection_string(azurite.connection_string, env["BULK_CONTAINER"])
    container.create_container()
    container.upload_blob("big.csv", data)
    host = start_devhost(env, workdir / f"devhost-{rows}.log")
    try:
        idle_mib = _peak_rss_mib(host.process.pid)
        started = time.monotonic()
        run_bulk_pickup(host.base_url)
        last_run = time.monotonic()
        while "processed/big.csv.summary.json" not in set(container.list_blob_names()):
            time.sleep(1)
            if time.monotonic() - last_run > TIMER_PERIOD_SECONDS:  # the next timer tick
                run_bulk_pickup(host.base_url)
                last_run = time.monotonic()
        elapsed = time.monotonic() - started
        peak_mib = _peak_rss_mib(host.process.pid)
    finally:
        host.stop()
    report = json.loads(container.download_blob("processed/big.csv.summary.json").readall())
    assert report["counts"]["succeeded"] == rows, report
    return {
        "rows": rows,
        "file_mib": len(data) / 1024 / 1024,
        "idle_rss_mib": idle_mib,
        "peak_rss_mib": peak_mib,
        "seconds": elapsed,
        "batch_calls": len(graph.emulator.batch_calls()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000)
    args = parser.parse_args()
    with run_azurite() as azurite, serve_emulator() as graph, tempfile.TemporaryDirectory() as tmp:
        baseline = measure(azurite, graph, args.baseline_rows, Path(tmp))
        large = measure(azurite, graph, args.rows, Path(tmp))
    for result in (baseline, large):
        print(
            f"{result['rows']:>7} rows ({result['file_mib']:.1f} MiB file): "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB (idle {result['idle_rss_mib']:.0f}), "
            f"{result['batch_calls']:.0f} $batch calls, {result['seconds']:.0f} s"
        )
    ratio = large["peak_rss_mib"] / baseline["peak_rss_mib"]
    sizes = large["file_mib"] / baseline["file_mib"]
    print(
        f"peak RSS ratio {args.rows:,} / {args.baseline_rows:,} rows: {ratio:.2f} "
        f"(file size ratio {sizes:.0f})"
    )


if __name__ == "__main__":
    main()
