"""`python -m bench.faults`: run the fault scenarios, print the table, write faults.md."""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.faults.report import check_failures, markdown, replay_failures
from bench.faults.scenarios import FULL, GRAPH_TIMEOUT_SECONDS, QUICK, Outcome, run_scenario, specs
from bench.faults.stack import EmulatorAdmin
from bench.pace.__main__ import stop_on_sigterm
from bench.pace.stack import ROOT, run_emulator

DEFAULT_SEED = 20261122


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    keys = [spec.key for spec in specs(quick=False)]
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Faults in Graph, storage and the host, on the local stack: does every operation "
        "end with exactly one final row, and is nothing made twice?",
    )
    parser.add_argument("--scenario", action="append", choices=keys, metavar="KEY", help=f"one of {keys}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run of the harness")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds faults, kills and outages")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", metavar="DIR")
    return parser.parse_args(argv)


def product_version() -> str:
    """The commit the hosts ran, and how many of the app's files differed from it when the run began."""
    git = shutil.which("git")
    if git is None:
        return "an unknown commit"
    try:
        commit = subprocess.run(  # noqa: S603 - git with fixed arguments
            [git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(  # noqa: S603 - git with fixed arguments
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    changed = [line for line in changed if not line[3:].startswith(("bench/", "tests/"))]  # the app's own
    return f"commit {commit}" + (f" with {len(changed)} files changed" if changed else "")


def preamble(args: argparse.Namespace, version: str) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes = QUICK if args.quick else FULL
    return [
        f"Run {when} ({'quick' if args.quick else 'full'} sizes: {sizes.graph:,} operations per Graph "
        f"scenario, {sizes.storage:,} for storage, {sizes.process:,} for the host), seed {args.seed}, "
        f"the app at {version}; "
        f"Python {platform.python_version()} on {platform.machine()}. One dev host; "
        f"GRAPH_TIMEOUT_SECONDS {GRAPH_TIMEOUT_SECONDS}, CLAIM_TIMEOUT_SECONDS 20, "
        "DEVHOST_MESSAGE_LEASE_SECONDS 10, QUEUE_EXTRA_LEASE_SECONDS 15, backoff 0.5-8 s, "
        "MAX_ATTEMPTS 8; the emulator's limits off (the app paces itself: 50 writes/s, 20 in 2 and 3).",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    wanted = set(args.scenario or [])
    chosen = [spec for spec in specs(quick=args.quick) if not wanted or spec.key in wanted]
    sizes = QUICK if args.quick else FULL
    log_dir = Path(tempfile.mkdtemp(prefix="faults-logs-"))
    print(f"logs, Azurite folders and findings: {log_dir}", flush=True)
    outcomes: list[Outcome] = []
    errors: list[str] = []
    version = product_version()
    started = time.monotonic()
    interrupted = False
    try:
        with run_emulator(log_dir / "emulator.log") as emulator:
            admin = EmulatorAdmin(emulator)
            try:
                for index, spec in enumerate(chosen):
                    seed = args.seed + index
                    begun = time.monotonic()
                    try:
                        outcomes.append(
                            run_scenario(spec, sizes.operations(spec.kind), seed, emulator, admin, log_dir)
                        )
                    except Exception as error:  # one broken scenario must not hide the others
                        logging.exception("scenario %s failed", spec.key)
                        errors.append(f"{spec.title}: did not finish ({type(error).__name__}: {error})")
                    print(f"scenario {spec.key}: done in {time.monotonic() - begun:.0f} s", flush=True)
            finally:
                admin.close()
    except KeyboardInterrupt:
        interrupted = True
    if not outcomes:
        return 130 if interrupted else 1
    text = markdown(outcomes, preamble(args, version), time.monotonic() - started, errors)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {args.out / 'faults.md'}; logs and findings: {log_dir}", flush=True)
    if interrupted:
        return 130
    failed = (
        errors
        or any(check_failures(f) for outcome in outcomes for f in outcome.every)
        or any(replay_failures(outcome) for outcome in outcomes)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
