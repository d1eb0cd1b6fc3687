"""The sweep's plan, verdicts and page ranges: pure functions."""

from __future__ import annotations

import pytest

from pagerfs.sweep import plan
from pagerfs.sweep.ranges import format_ranges, merge
from pagerfs.sweep.verdict import Outcome, classify, describe

PAGE = 4096


def read(path, first, npages=1):
    return {"event": "read", "path": path, "offset": first * PAGE, "length": npages * PAGE}


def test_touched_pages_come_from_reads_only_and_are_sorted():
    events = [read("/b", 7), read("/a", 3, 2), {"event": "packet", "path": "/a",
              "offset": 0, "length": 40960}, read("/a", 1), read("/a", 3),
              {"event": "read", "path": "/a", "offset": 5 * PAGE + 10, "length": 100}]
    assert plan.touched_pages(events) == {"a": (1, 3, 4, 5), "b": (7,)}


def test_one_target_per_page_and_error_in_a_fixed_order():
    targets = plan.make_plan({"b": (2,), "a": (0, 5)}, ["IO", "corrupt"])
    assert [(t.case, t.path, t.pages, t.error) for t in targets] == [
        (1, "a", (0,), "IO"), (2, "a", (0,), "corrupt"),
        (3, "a", (5,), "IO"), (4, "a", (5,), "corrupt"),
        (5, "b", (2,), "IO"), (6, "b", (2,), "corrupt")]
    assert targets[2].rule == "pages=5 error=IO"


def test_groups_take_consecutive_touched_pages_and_transient_counts_two():
    targets = plan.make_plan({"f": (0, 1, 2, 7, 8)}, ["IO"], group=2, transient=True)
    assert [t.pages for t in targets] == [(0, 1), (2, 7), (8,)]
    assert targets[1].rule == "pages=2-7 error=IO count=2"


def test_probability_rules_get_seeds_of_their_own_from_the_sweeps():
    a = plan.make_plan({"f": (4, 5)}, ["IO"], probability=0.25, seed=9)
    assert a == plan.make_plan({"f": (4, 5)}, ["IO"], probability=0.25, seed=9)
    assert a[0].seed != a[1].seed
    assert a[0].seed != plan.make_plan({"f": (4,)}, ["IO"], probability=0.25, seed=10)[0].seed
    assert a[0].rule == f"pages=4 error=IO probability=0.25 seed={a[0].seed}"
    with pytest.raises(plan.PlanError, match="--probability 2: expected"):
        plan.make_plan({"f": (4,)}, ["IO"], probability=2)


def test_sample_is_reproducible_from_the_seed_and_keeps_plan_order():
    touched = {"f": tuple(range(100))}
    a = plan.make_plan(touched, ["IO"], sample=10, seed=3)
    b = plan.make_plan(touched, ["IO"], sample=10, seed=3)
    c = plan.make_plan(touched, ["IO"], sample=10, seed=4)
    assert [t.pages for t in a] == [t.pages for t in b] != [t.pages for t in c]
    assert [t.case for t in a] == list(range(1, 11))
    assert [t.first for t in a] == sorted(t.first for t in a)
    assert len(plan.make_plan(touched, ["IO"], sample=1000)) == 100


def test_files_globs_select_and_refuse_what_matches_nothing():
    touched = {"data/a.bin": (0,), "data/b.txt": (1,), "top": (2,)}
    image = [*touched, "data/unread.bin"]
    assert list(plan.select_files(touched, image, [])) == list(touched)
    assert list(plan.select_files(touched, image, ["data/*.bin"])) == ["data/a.bin"]
    assert list(plan.select_files(touched, image, ["/top", "*.txt"])) == ["data/b.txt", "top"]
    with pytest.raises(plan.PlanError, match="--files nope.*: matches no file in the image"):
        plan.select_files(touched, image, ["nope*"])
    with pytest.raises(plan.PlanError, match="read no page of the files --files selects"):
        plan.select_files(touched, image, ["data/unread.bin"])


@pytest.mark.parametrize("text, error", [
    ("", "name at least one"), ("IO,bogus", "--error bogus"), ("none", "--error none")])
def test_bad_error_kinds_are_refused(text, error):
    with pytest.raises(plan.PlanError, match=error):
        plan.parse_errors(text)


def test_error_kinds_keep_their_order_once_each():
    assert plan.parse_errors("corrupt, IO,corrupt") == ("corrupt", "IO")


def outcome(exit_status=0, signal=None, timed_out=False, digest="d"):
    return Outcome(exit_status, signal, timed_out, digest, 0.1)


@pytest.mark.parametrize("kw, fired, verdict", [
    ({"exit_status": 1}, True, "handled"),
    ({"exit_status": None, "signal": 7}, True, "crashed"),
    ({"exit_status": None, "signal": 7}, False, "crashed"),
    ({"exit_status": None, "timed_out": True}, True, "hung"),
    ({"exit_status": None, "timed_out": True}, False, "hung"),
    ({"digest": "other"}, True, "silent"),
    ({}, True, "masked"),
    ({}, False, "not-reached"),
    ({"exit_status": 1}, False, "not-reached"),
    ({"digest": "other"}, False, "not-reached"),
])
def test_classify(kw, fired, verdict):
    assert classify(outcome(**kw), "d", fired) == verdict


def test_describe_names_the_signal_and_the_exit_status():
    assert describe("crashed", outcome(exit_status=None, signal=7)) == "crashed (SIGBUS)"
    assert describe("handled", outcome(exit_status=3)) == "handled (exit 3)"


def test_ranges_merge_consecutive_pages():
    assert merge([5, 1, 2, 3, 9, 10, 2]) == [(1, 3), (5, 5), (9, 10)]
    assert format_ranges(merge([5, 1, 2, 3, 9, 10])) == "1-3, 5, 9-10"
    assert merge([]) == []
