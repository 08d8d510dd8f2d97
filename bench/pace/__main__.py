"""`python -m bench.pace`: run the scenarios, print the table, write pace.md and pace.png.

    .venv/bin/python -m bench.pace                      # all six scenarios, real sizes (long)
    .venv/bin/python -m bench.pace --quick              # small sizes: a smoke run of the harness
    .venv/bin/python -m bench.pace --scenario 1 --scenario 5 --out /tmp/pace

Exit code 0 when every target was met and no run timed out, 1 otherwise, 130 on Ctrl-C (the
report of the scenarios finished so far is still written). Host and emulator logs go to a
temporary folder named on stderr.
"""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.pace.report import markdown, plot
from bench.pace.result import Check, Row
from bench.pace.scenarios import FULL, QUICK, SCENARIOS, Bench, progress
from bench.pace.stack import ROOT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pace",
        description="How fast provisioning work gets through a rate-limited Graph: the app against "
        "a naive client and an SDK-style $batch client, on the local stack, in one run.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="N",
        choices=list(SCENARIOS),
        help="run this scenario (repeatable; default all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run of the harness")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        metavar="DIR",
        help="where pace.md and pace.png go (default: bench/results)",
    )
    parser.add_argument(
        "--legacy-throttle",
        action="store_true",
        help="emulate limits with the emulator's older per-item `throttle` bucket (for an emulator "
        "without `limits`; it also counts reads)",
    )
    return parser.parse_args(argv)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every host, the emulator and Azurite are stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_scenarios(keys: list[str], bench: Bench) -> tuple[list[Row], list[Check], bool]:
    """Every scenario in turn; one that breaks is reported as failed and the others still run.
    The third value is False when Ctrl-C stopped the run."""
    rows: list[Row] = []
    checks: list[Check] = []
    for key in keys:
        progress(f"scenario {key}: started")
        started = time.monotonic()
        try:
            more_rows, more_checks = SCENARIOS[key](bench)
        except KeyboardInterrupt:
            progress("interrupted: stopping hosts, emulator and Azurite")
            return rows, checks, False
        except Exception as error:
            logging.exception("scenario %s failed", key)
            more_rows, more_checks = (
                [],
                [Check(key, "the scenario ran", f"error: {one_line(error)}", "ran", False)],
            )
        rows += more_rows
        checks += more_checks
        progress(f"scenario {key}: done in {time.monotonic() - started:.0f} s")
    return rows, checks, True


def one_line(error: BaseException) -> str:
    """An error's type and last line: enough for a table cell; the traceback went to stderr."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


def preamble(args: argparse.Namespace) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes = "quick (smoke-run)" if args.quick else "full"
    option = "`throttle` (legacy per-item bucket)" if args.legacy_throttle else "`limits`"
    return [
        f"Run {when}, {sizes} sizes, emulated limits through the emulator's {option} option; "
        f"Python {platform.python_version()} on {platform.machine()}.",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    keys = sorted(set(args.scenario or SCENARIOS))
    log_dir = Path(tempfile.mkdtemp(prefix="pace-logs-"))
    progress(f"logs of the emulator and dev hosts: {log_dir}")
    try:
        with ExitStack() as exits:
            bench = Bench(exits, QUICK if args.quick else FULL, log_dir, legacy_throttle=args.legacy_throttle)
            rows, checks, finished = run_scenarios(keys, bench)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130
    if not rows and not checks:
        return 130 if not finished else 1
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, checks, preamble(args))
    (args.out / "pace.md").write_text(text, encoding="utf-8")
    print(text)
    if plot(rows, args.out / "pace.png"):
        progress(f"written: {args.out / 'pace.md'}, {args.out / 'pace.png'}")
    else:
        progress(f"written: {args.out / 'pace.md'} (no rate-limited scenario to plot)")
    if not finished:
        return 130
    met = all(check.passed for check in checks) and not any(row.result.timed_out for row in rows)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
