"""What one run's outcome means. A pure function of what was observed, so that the
sweep, its replay and the tests all judge alike.

In order of precedence:
  hung         the timeout expired (the process group was killed)
  crashed      killed by a signal (SIGBUS from a mapped page, SIGSEGV, SIGABRT, ...)
  not-reached  the rule never failed a page in this run (the daemon's stats say so):
               whatever else happened was not this fault's doing
  handled      the program failed cleanly: a non-zero exit status
  silent       exit 0, but the output differs from the clean run's: wrong results
  masked       exit 0 and the same output although the fault fired
A hang or a crash is reported even if the rule did not fire: either is a failure a CI
job must see, whatever its cause.
"""

from __future__ import annotations

import dataclasses
import signal as _signal

HANDLED, CRASHED, HUNG, SILENT, MASKED, NOT_REACHED = (
    "handled", "crashed", "hung", "silent", "masked", "not-reached")
VERDICTS = (HANDLED, MASKED, NOT_REACHED, SILENT, CRASHED, HUNG)
# The verdicts that make `pagerfs sweep` exit 1.
FAILING = frozenset({CRASHED, HUNG, SILENT})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one run of the program ended."""

    exit_status: int | None   # None when killed by a signal or the timeout
    signal: int | None        # the signal that killed it (not ours, unless timed_out)
    timed_out: bool
    digest: str               # of stdout and the --output files
    duration: float           # seconds
    stderr: str = ""          # a short excerpt


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(outcome: Outcome, golden_digest: str, fired: bool) -> str:
    if outcome.timed_out:
        return HUNG
    if outcome.signal is not None:
        return CRASHED
    if not fired:
        return NOT_REACHED
    if outcome.exit_status != 0:
        return HANDLED
    if outcome.digest != golden_digest:
        return SILENT
    return MASKED


def describe(verdict: str, outcome: Outcome) -> str:
    """The verdict with what decided it, e.g. `crashed (SIGBUS)`, `handled (exit 1)`."""
    if verdict == CRASHED:
        return f"crashed ({signal_name(outcome.signal)})"
    if verdict == HANDLED:
        return f"handled (exit {outcome.exit_status})"
    return verdict
