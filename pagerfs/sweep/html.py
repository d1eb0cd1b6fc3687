"""`--report FILE.html`: one self-contained page (no script, no fetch): the counts, a
map of each file's pages coloured by verdict, the summary table and every run."""

from __future__ import annotations

import html
import shlex

from pagerfs import __version__
from pagerfs.sweep.ranges import format_ranges
from pagerfs.sweep.results import Sweep, counts
from pagerfs.sweep.summary import label, rows, unit
from pagerfs.sweep.verdict import VERDICTS, signal_name

PAGE = 4096
COLOURS = {
    "handled": "#2e7d32", "masked": "#0277bd", "not-reached": "#b0b0b0",
    "silent": "#6a1b9a", "crashed": "#c62828", "hung": "#ef6c00",
}
MEANING = {
    "handled": "failed cleanly (non-zero exit)",
    "masked": "exit 0, same output, although the fault fired",
    "not-reached": "the rule never fired",
    "silent": "exit 0 but different output",
    "crashed": "killed by a signal",
    "hung": "timed out",
}

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 6px; }
code, pre { font: 12px ui-monospace, monospace; }
.meta { color: #555; margin: 0 0 12px; }
.legend > span { display: inline-block; margin: 0 14px 6px 0; }
.sw { display: inline-block; width: 12px; height: 12px; vertical-align: -1px;
      margin-right: 4px; border-radius: 2px; }
.map { display: flex; flex-wrap: wrap; gap: 2px; margin: 6px 0 4px; }
.map i { width: 12px; height: 12px; border-radius: 2px; background: #eee; }
.map i.untouched { background: #f4f4f4; outline: 1px solid #e2e2e2; outline-offset: -1px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #eee;
         vertical-align: top; }
td.n { text-align: right; }
.fail { font-weight: 600; }
details pre { white-space: pre-wrap; background: #f7f7f7; padding: 6px; margin: 4px 0; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _swatch(verdict: str) -> str:
    return f'<span class="sw" style="background:{COLOURS[verdict]}"></span>'


def _style() -> str:
    rules = "".join(f".map i.{v} {{ background: {c}; }}\n" for v, c in COLOURS.items())
    return CSS + rules


def _maps(sweep: Sweep) -> list[str]:
    by_map: dict[tuple[str, str], dict[int, tuple[str, str]]] = {}
    for run in sweep.runs:
        cells = by_map.setdefault((run.target.path, run.target.error), {})
        for page in run.target.pages:
            cells[page] = (run.verdict, f"page {page}: {label(run)}, case {run.target.case}")
    out = []
    for (path, error), cells in sorted(by_map.items()):
        size = sweep.baseline.sizes.get(path, 0)
        npages = max(-(-size // PAGE), max(cells) + 1)
        touched = sweep.baseline.pages.get(path, ())
        out.append(f"<h2>{_e(path)} <small>&middot; {_e(error)} &middot; {npages} pages, "
                   f"{len(touched)} read by the clean run, {len(cells)} failed</small></h2>")
        out.append('<div class="map">')
        for page in range(npages):
            verdict, title = cells.get(page, ("untouched", f"page {page}: not swept"))
            out.append(f'<i class="{verdict}" title="{_e(title)}"></i>')
        out.append("</div>")
    return out


def render(sweep: Sweep) -> str:
    tally = counts(sweep.runs)
    s = sweep.settings
    status = ("FAILED: a run crashed, hung or was silent" if sweep.exit_status
              else "ok: no run crashed, hung or was silent")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pagerfs sweep: {_e(shlex.join(sweep.command))}</title>",
        f"<style>{_style()}</style></head><body>",
        f"<h1>pagerfs sweep: <code>{_e(shlex.join(sweep.command))}</code></h1>",
        f'<p class="meta">{_e(sweep.source or sweep.image)} &middot; '
        f"{len(sweep.runs)} runs, {_e(', '.join(s.errors))}, {_e(unit(s))} &middot; "
        f"timeout {s.timeout:g} s &middot; clean run {sweep.baseline.duration:.2f} s &middot; "
        f"pagerfs {__version__} &middot; <b>{_e(status)}</b></p>",
        '<div class="legend">',
    ]
    for verdict in VERDICTS:
        parts.append(f'<span title="{_e(MEANING[verdict])}">{_swatch(verdict)}'
                     f"{verdict}: <b>{tally.get(verdict, 0)}</b></span>")
    parts.append('<span><span class="sw" style="background:#f4f4f4;outline:1px solid #ddd">'
                 "</span>not swept</span></div>")
    parts += _maps(sweep)
    parts.append("<h2>Summary</h2><table><tr><th>file</th><th>error</th><th>verdict</th>"
                 "<th>runs</th><th>pages</th></tr>")
    for r in rows(sweep):
        cls = ' class="fail"' if r.verdict.split(" ")[0] in ("crashed", "hung", "silent") else ""
        parts.append(f"<tr{cls}><td>{_e(r.file)}</td><td>{_e(r.error)}</td>"
                     f"<td>{_swatch(r.verdict.split(' ')[0])}{_e(r.verdict)}</td>"
                     f'<td class="n">{r.runs}</td><td>{_e(format_ranges(r.ranges))}</td></tr>')
    parts.append("</table><h2>Runs</h2><table><tr><th>case</th><th>file</th><th>rule</th>"
                 "<th>verdict</th><th>exit</th><th>signal</th><th>s</th><th>stderr</th></tr>")
    for run in sweep.runs:
        o = run.outcome
        err = (f"<details><summary>{len(o.stderr)} chars</summary><pre>{_e(o.stderr)}</pre>"
               "</details>") if o.stderr else ""
        parts.append(
            f'<tr><td class="n">{run.target.case}</td><td>{_e(run.target.path)}</td>'
            f"<td><code>{_e(run.target.rule)}</code></td>"
            f"<td>{_swatch(run.verdict)}{_e(run.verdict)}</td>"
            f"<td>{'' if o.exit_status is None else o.exit_status}</td>"
            f"<td>{_e(signal_name(o.signal) or '')}</td><td>{o.duration:.2f}</td><td>{err}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"
