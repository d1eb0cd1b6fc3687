"""Fault rules: parsing, formatting, and which requests they fire on."""

import pytest
from hypothesis import given, strategies as st

from pagerfs.pager.faults import (FaultRule, FaultRuleError, FaultSet, format_rule,
                                  page_runs, parse_rule)


def test_parse_full_rule():
    rule = parse_rule("pages=3-7 error=IO count=2 probability=0.5 seed=9 delay_ms=20")
    assert rule == FaultRule(3, 7, "IO", count=2, probability=0.5, seed=9, delay_ms=20)


def test_single_page_and_case_of_error_names():
    assert parse_rule("pages=4 error=io_data_integrity") == FaultRule(4, 4, "IO_DATA_INTEGRITY")
    assert parse_rule(b"error=ZX_ERR_BAD_STATE pages=0").error == "BAD_STATE"
    assert parse_rule("pages=0 error=Corrupt").error == "corrupt"


@pytest.mark.parametrize("text", [
    "", "pages=1", "error=IO", "pages=5-2 error=IO", "pages=-1 error=IO",
    "pages=a error=IO", "pages=1 error=EIO", "pages=1 error=IO count=0",
    "pages=1 error=IO probability=0", "pages=1 error=IO probability=1.5",
    "pages=1 error=IO probability=nan", "pages=1 error=IO seed=3",
    "pages=1 error=none", "pages=1 error=IO delay_ms=600001", "pages=1 error=IO bogus=1",
    "pages=1 error=IO pages=2", "pages=1 error=IO count", "pages=1 error=IO count=",
    b"pages=1 error=IO \xff",
])
def test_malformed_rules_are_refused(text):
    with pytest.raises(FaultRuleError):
        parse_rule(text)


rules = st.builds(
    lambda first, span, error, count, prob, seed, delay: FaultRule(
        first, first + span, error, count, prob, seed if prob is not None else None,
        delay if error != "none" else max(delay, 1)),
    st.integers(0, 10**6), st.integers(0, 1000),
    st.sampled_from(["IO", "IO_DATA_INTEGRITY", "BAD_STATE", "corrupt", "none"]),
    st.none() | st.integers(1, 100),
    st.none() | st.floats(0.001, 1.0),
    st.integers(0, 2**32), st.integers(0, 1000),
)


@given(rules)
def test_format_then_parse_round_trips(rule):
    assert parse_rule(format_rule(rule)) == rule


def test_rule_fires_only_on_requests_sharing_a_page():
    faults = FaultSet()
    faults.add(parse_rule("pages=10-11 error=IO_DATA_INTEGRITY"))
    assert faults.fire(0, 9).empty
    assert faults.fire(12, 40).empty
    firing = faults.fire(8, 31)
    assert firing.fail == {10: "IO_DATA_INTEGRITY", 11: "IO_DATA_INTEGRITY"}
    # A one-page request gets only its own page.
    assert faults.fire(11, 11).fail == {11: "IO_DATA_INTEGRITY"}


def test_count_limits_the_requests_a_rule_fires_on():
    faults = FaultSet()
    faults.add(parse_rule("pages=2 error=IO count=2"))
    assert faults.fire(0, 0).empty  # not matching: does not use up the count
    assert faults.fire(2, 2).fail == {2: "IO"}
    assert faults.fire(0, 5).fail == {2: "IO"}
    assert faults.fire(2, 2).empty
    assert not faults.guarded(2, 2)


def test_probability_is_reproducible_for_a_seed_and_near_its_rate():
    def outcomes(seed):
        faults = FaultSet()
        faults.add(parse_rule(f"pages=0 error=IO probability=0.3 seed={seed}"))
        return [not faults.fire(0, 0).empty for _ in range(2000)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert first != outcomes(8)
    assert 450 < sum(first) < 750


def test_first_rule_added_wins_and_corrupt_yields_to_fail():
    faults = FaultSet()
    faults.add(parse_rule("pages=0-3 error=BAD_STATE"))
    faults.add(parse_rule("pages=2-5 error=IO"))
    faults.add(parse_rule("pages=5-6 error=corrupt"))
    faults.add(parse_rule("pages=0-9 error=none delay_ms=5"))
    firing = faults.fire(0, 9)
    assert firing.fail == {0: "BAD_STATE", 1: "BAD_STATE", 2: "BAD_STATE", 3: "BAD_STATE",
                           4: "IO", 5: "IO"}
    assert firing.corrupt == {6}
    assert firing.delay_ms == 5


def test_clear_returns_the_removed_rules():
    faults = FaultSet()
    rule = parse_rule("pages=1 error=IO")
    faults.add(rule)
    assert faults.clear() == [rule]
    assert not faults and faults.fire(0, 10).empty


def test_delay_only_rules_do_not_guard_read_ahead():
    faults = FaultSet()
    faults.add(parse_rule("pages=4 error=none delay_ms=1"))
    assert not faults.guarded(0, 10)
    faults.add(parse_rule("pages=4 error=corrupt"))
    assert faults.guarded(0, 10) and not faults.guarded(5, 10)


def test_page_runs():
    assert page_runs([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 1), (9, 2)]
    assert page_runs([]) == []


def test_faults_file_lines_comments_and_colons_in_paths():
    from pagerfs.pager.faults import parse_faults_file

    text = ("# broken pages of the test data\n\n"
            "data.bin: pages=2-3 error=IO   # two pages\n"
            "  /dir/a:b.txt :pages=0 error=corrupt\n")
    assert parse_faults_file(text) == [
        (3, "data.bin", FaultRule(2, 3, "IO")),
        (4, "/dir/a:b.txt", FaultRule(0, 0, "corrupt")),
    ]


@pytest.mark.parametrize("line, needle", [
    ("data.bin pages=1 error=IO", "expected 'PATH: RULE'"),
    (": pages=1 error=IO", "expected 'PATH: RULE'"),
    ("data.bin: pages=1 error=EIO", "error='EIO'"),
    ("data.bin:", "pages= is required"),
])
def test_faults_file_errors_name_the_line(line, needle):
    from pagerfs.pager.faults import parse_faults_file

    with pytest.raises(FaultRuleError) as info:
        parse_faults_file("ok.bin: pages=0 error=IO\n" + line + "\n")
    assert str(info.value).startswith("2: ") and needle in str(info.value)


def test_each_rule_counts_the_requests_it_fired_on():
    faults = FaultSet()
    hit = faults.add(FaultRule(0, 1, "IO"))
    missed = faults.add(FaultRule(9, 9, "IO"))
    assert faults.fire(0, 3).rules_fired == 1
    faults.fire(1, 1)
    assert {s.id: s.fired for s in faults.states()} == {hit: 2, missed: 0}
    assert faults.remove(hit) == FaultRule(0, 1, "IO") and faults.remove(hit) is None
    assert [s.id for s in faults.states()] == [missed]


def test_a_thread_that_must_not_wait_is_turned_away_while_rules_change():
    import threading

    faults = FaultSet()
    with faults.serving(wait=False) as admitted:
        assert admitted
    inside, leave = threading.Event(), threading.Event()

    def change():
        with faults.changing():
            inside.set()
            leave.wait(30)

    writer = threading.Thread(target=change)
    writer.start()
    assert inside.wait(30)
    with faults.serving(wait=False) as admitted:
        assert not admitted  # at once, not after the change
    leave.set()
    writer.join(30)
    with faults.serving(wait=False) as admitted:
        assert admitted
