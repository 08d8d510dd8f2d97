"""The results as a Markdown table (printed and written) and a PNG of operations over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.pace.result import Check, Row

COLUMNS = (
    "scenario",
    "contender",
    "operations",
    "completed",
    "failed",
    "seconds",
    "ratio to bound",
    "$batch calls (requests)",
    "subrequests sent",
    "429 %",
)
LINE_STYLES = ("-", "-.", "--", ":")
NOTES = (
    "Bound: operations / the emulated writes per second; the write burst lets a client finish "
    "slightly under it (ratio just below 1).",
    "Calls, subrequests and 429s are counted by the emulator from its call log; for the naive "
    "client each request is one subrequest.",
    "Scenario 3's call columns cover the whole run until the small job's 200 (bulk drain included).",
)


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    numeric = [all(_is_number(line[i]) for line in lines) if lines else False for i in range(len(header))]
    rule = ["---:" if right else "---" for right in numeric]
    return ["| " + " | ".join(escape(cell) for cell in cells) + " |" for cells in (header, rule, *lines)]


def escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def _is_number(cell: str) -> bool:
    return cell == "–" or cell.replace(",", "").replace(".", "").replace(" ", "").replace("%", "").isdigit()


def calls_cell(row: Row) -> str:
    calls = row.calls
    parts = [f"{calls.batch_calls:,}"] if calls.batch_calls or not calls.direct_calls else []
    if calls.direct_calls:
        parts.append(f"{calls.direct_calls:,} requests")
    whole = f" ({calls.whole_call_throttled} answered 429 whole)" if calls.whole_call_throttled else ""
    return " + ".join(parts) + whole


def row_cells(row: Row) -> list[str]:
    result = row.result
    seconds = f"{result.seconds:.1f}" + (" timed out" if result.timed_out else "")
    ratio = f"{result.seconds / row.bound:.2f}" if row.bound else "–"
    return [
        row.scenario,
        row.contender,
        f"{result.operations:,}",
        f"{result.completed:,}",
        f"{result.failed:,}",
        seconds,
        ratio,
        calls_cell(row),
        f"{row.calls.subrequests:,}",
        f"{row.calls.throttled_share * 100:.1f} %",
    ]


def check_cells(check: Check) -> list[str]:
    return [check.scenario, check.measure, check.value, check.target, "PASS" if check.passed else "FAIL"]


def markdown(rows: Sequence[Row], checks: Sequence[Check], preamble: Sequence[str]) -> str:
    lines = ["# Pace: provisioning work through a rate-limited Graph", "", *preamble, ""]
    if rows:
        lines += [*table(COLUMNS, [row_cells(r) for r in rows]), ""]
    if checks:
        header = ("scenario", "measure", "value", "target", "result")
        lines += ["## Targets", "", *table(header, [check_cells(c) for c in checks]), ""]
    if rows:
        lines += [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: Path) -> bool:
    """Successful subrequests over time per contender, one panel per rate-limited scenario,
    with the limit line rate * t. False when no row has a limit to draw."""
    plotted = [row for row in rows if row.rate is not None]
    scenarios = list(dict.fromkeys(row.scenario for row in plotted))
    if not scenarios:
        return False
    figure = Figure(figsize=(9, 4.5 * len(scenarios)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(scenarios), 1, squeeze=False)[:, 0]
    for axis, scenario in zip(axes, scenarios, strict=True):
        draw_panel(axis, scenario, [row for row in plotted if row.scenario == scenario])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def draw_panel(axis: Axes, scenario: str, rows: Sequence[Row]) -> None:
    horizon = max((max(row.calls.success_times, default=0.0) for row in rows), default=0.0)
    for index, row in enumerate(rows):
        times = [0.0, *row.calls.success_times]
        style = LINE_STYLES[index % len(LINE_STYLES)]  # curves that hug the limit stay apart
        axis.step(times, range(len(times)), where="post", linestyle=style, label=row.contender)
    rate = rows[0].rate or 0.0
    horizon = horizon or (rows[0].bound or 1.0)
    axis.plot(
        [0, horizon],
        [0, rate * horizon],
        color="grey",
        linewidth=3,
        alpha=0.5,
        label=f"limit: {rate:g} writes/s × t",
    )
    axis.set_ylim(0, max(row.result.operations for row in rows) * 1.05)
    axis.set_xlim(0, horizon * 1.02)
    axis.set_title(scenario)
    axis.set_xlabel("seconds since the run started")
    axis.set_ylabel("operations completed")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
