"""The summary table: per file, error kind and verdict, the pages, merged into ranges."""

from __future__ import annotations

import dataclasses
import shlex

from pagerfs.sweep.ranges import format_ranges, merge
from pagerfs.sweep.results import Run, Sweep, counts
from pagerfs.sweep.verdict import CRASHED, VERDICTS, signal_name


def label(run: Run) -> str:
    """The verdict as the table shows it: crashes are told apart by their signal."""
    if run.verdict == CRASHED:
        return f"{CRASHED} ({signal_name(run.outcome.signal)})"
    return run.verdict


def _order(text: str) -> tuple[int, str]:
    return VERDICTS.index(text.split(" ")[0]), text


@dataclasses.dataclass(frozen=True)
class Row:
    file: str
    error: str
    verdict: str      # a label: `crashed (SIGBUS)`
    runs: int
    ranges: tuple[tuple[int, int], ...]


def rows(sweep: Sweep) -> list[Row]:
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in sweep.runs:
        key = (run.target.path, run.target.error)
        groups.setdefault(key, {}).setdefault(label(run), []).append(run)
    out = []
    for (path, error), by in sorted(groups.items()):
        for text in sorted(by, key=_order):
            runs = by[text]
            pages = [p for run in runs for p in run.target.pages]
            out.append(Row(path, error, text, len(runs), tuple(merge(pages))))
    return out


def unit(settings) -> str:
    n = settings.group
    what = "one page a run" if n == 1 else f"{n} pages a run"
    if settings.transient:
        what += ", transient"
    if settings.probability is not None:
        what += f", each request failing with chance {settings.probability:g}"
    if settings.sample is not None:
        what += f", a sample of {settings.sample} (seed {settings.seed})"
    return what


def short_command(command, width: int = 160) -> str:
    """The command on one line, cut to `width` (a script given with -c can be long)."""
    text = " ".join(shlex.join(command).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def render(sweep: Sweep) -> str:
    table = [("FILE", "ERROR", "VERDICT", "RUNS", "PAGES")]
    table += [(r.file, r.error, r.verdict, str(r.runs), format_ranges(r.ranges))
              for r in rows(sweep)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [f"pagerfs sweep: {len(sweep.runs)} runs of `{short_command(sweep.command)}` "
             f"({', '.join(sweep.settings.errors)}; {unit(sweep.settings)})"]
    for row in table:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]),
                 row[3].rjust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    tally = counts(sweep.runs)
    lines.append("total: " + ", ".join(f"{tally[v]} {v}" for v in VERDICTS if v in tally)
                 + ("; FAILED (a run crashed, hung or was silent)" if sweep.exit_status
                    else "; ok (no run crashed, hung or was silent)"))
    return "\n".join(lines) + "\n"
