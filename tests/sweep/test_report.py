"""The summary table, the JSON document and the HTML page, from a made-up sweep."""

from __future__ import annotations

import html.parser
import json
import re

import pytest

from pagerfs.sweep import html as report_html
from pagerfs.sweep import results, summary
from pagerfs.sweep.plan import Target
from pagerfs.sweep.verdict import Outcome

SETTINGS = results.Settings(errors=("IO",), transient=False, group=1, sample=None, seed=0,
                            jobs=2, timeout=5.0, files=(), outputs=(),
                            mount_options=("read_ahead=0", "read_ahead_kb=0"))


def make_sweep(verdicts: dict[int, str], path="data.bin") -> results.Sweep:
    runs = []
    for case, (page, verdict) in enumerate(sorted(verdicts.items()), 1):
        outcome = Outcome(
            exit_status={"handled": 1, "crashed": None, "hung": None}.get(verdict, 0),
            signal=7 if verdict == "crashed" else None, timed_out=verdict == "hung",
            digest="sha256:x" if verdict == "silent" else "sha256:g", duration=0.25,
            stderr="read error <b>\n" if verdict == "handled" else "")
        runs.append(results.Run(Target(case, path, (page,), "IO"), verdict,
                                verdict != "not-reached", outcome))
    baseline = results.Baseline(0, "sha256:g", 0.2, {path: tuple(sorted(verdicts))},
                                {path: 12 * 4096})
    return results.Sweep("/tmp/x.img", "/src", ("sha256sum", "{}/data.bin"), SETTINGS,
                         baseline, tuple(runs))


MIXED = {0: "handled", 1: "handled", 2: "handled", 4: "crashed", 5: "crashed",
         6: "handled", 8: "not-reached", 9: "silent", 10: "masked"}


def test_summary_merges_consecutive_pages_of_each_verdict():
    text = summary.render(make_sweep(MIXED))
    lines = text.splitlines()
    assert "9 runs of `sha256sum '{}/data.bin'`" in lines[0]
    table = [re.split(r"\s{2,}", line) for line in lines[2:-1]]
    assert table == [
        ["data.bin", "IO", "handled", "4", "0-2, 6"],
        ["data.bin", "IO", "masked", "1", "10"],
        ["data.bin", "IO", "not-reached", "1", "8"],
        ["data.bin", "IO", "silent", "1", "9"],
        ["data.bin", "IO", "crashed (SIGBUS)", "2", "4-5"],
    ]
    assert lines[-1].startswith("total: 4 handled, 1 masked, 1 not-reached, 1 silent, 2 crashed")
    assert "FAILED" in lines[-1]


@pytest.mark.parametrize("verdicts, status", [
    ({0: "handled", 1: "masked", 2: "not-reached"}, 0),
    ({0: "handled", 1: "silent"}, 1), ({0: "hung"}, 1), ({0: "crashed"}, 1)])
def test_exit_status_is_1_exactly_when_a_run_crashed_hung_or_was_silent(verdicts, status):
    assert make_sweep(verdicts).exit_status == status


def test_json_round_trips_and_names_every_field(tmp_path):
    sweep = make_sweep(MIXED)
    path = tmp_path / "s.json"
    results.dump(sweep, str(path))
    doc = json.loads(path.read_text())
    assert doc["schema"] == "pagerfs-sweep/1" and doc["exit_status"] == 1
    crash = next(r for r in doc["runs"] if r["verdict"] == "crashed")
    assert crash["signal"] == "SIGBUS" and crash["rule"] == "pages=4 error=IO"
    assert crash["command"] == ["sha256sum", "{}/data.bin"]
    assert set(crash) >= {"case", "rule", "verdict", "exit_status", "signal",
                          "duration_s", "stderr", "fired"}
    assert results.load(str(path)) == sweep


def test_a_document_of_another_schema_is_refused(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"schema": "pagerfs-sweep/99"}))
    with pytest.raises(results.ResultsError, match="not a pagerfs-sweep/1 document"):
        results.load(str(path))
    path.write_text("{")
    with pytest.raises(results.ResultsError, match="not JSON"):
        results.load(str(path))


class Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "i":
            self.cells.append((a.get("class"), a.get("title")))
        if tag in ("script", "link", "img") or (a.get("src") or "").startswith("http"):
            self.external.append(tag)


def test_html_maps_every_page_of_the_file_by_verdict():
    page = report_html.render(make_sweep(MIXED))
    parser = Cells()
    parser.feed(page)
    assert not parser.external  # self-contained
    classes = [c for c, _ in parser.cells]
    assert classes == ["handled", "handled", "handled", "untouched", "crashed", "crashed",
                       "handled", "untouched", "not-reached", "silent", "masked", "untouched"]
    assert parser.cells[4][1] == "page 4: crashed (SIGBUS), case 4"
    assert "read error &lt;b&gt;" in page  # stderr is escaped
