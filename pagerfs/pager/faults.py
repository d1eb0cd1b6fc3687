"""Fault-injection rules: parse, format, and decide which requests they hit.

A rule is written the way `setfattr -v` takes it:

    pages=A-B error=E [count=N] [probability=P seed=S] [delay_ms=D]

Pages count from 0 and are inclusive. E is one of IO, IO_DATA_INTEGRITY, BAD_STATE (the
pager FAILs those pages with that status), corrupt (the bytes read from the image for
those pages are altered, so the store's real checksum catches them) or none (with
delay_ms: a slow pager, nothing fails).

Rules act per page request: a request "matches" a rule when its range shares a page with
the rule. count=N lets a rule fire on its next N matching requests only; probability=P
fires each matching request with chance P, drawn from the rule's own RNG seeded with S,
so a given sequence of requests always gives the same outcomes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import threading
from typing import Iterable, Iterator

# The statuses a pager may FAIL with (the contract's step 6), plus the two rule kinds
# that fail nothing by themselves.
FAIL_ERRORS = ("IO", "IO_DATA_INTEGRITY", "BAD_STATE")
ERRORS = FAIL_ERRORS + ("corrupt", "none")
MAX_DELAY_MS = 60_000
# A bound that keeps a typo like pages=0-99999999999999 from building huge page sets.
MAX_PAGE = 2**40


class FaultRuleError(ValueError):
    """A rule that cannot be parsed or does not fit the file it is set on."""


@dataclasses.dataclass(frozen=True)
class FaultRule:
    first_page: int
    last_page: int  # inclusive
    error: str
    count: int | None = None
    probability: float | None = None
    seed: int | None = None
    delay_ms: int = 0

    @property
    def npages(self) -> int:
        return self.last_page - self.first_page + 1

    def overlaps(self, first_page: int, last_page: int) -> bool:
        return self.first_page <= last_page and first_page <= self.last_page

    def clip(self, first_page: int, last_page: int) -> range:
        """The rule's pages within [first_page, last_page], as a range (maybe empty)."""
        return range(max(self.first_page, first_page), min(self.last_page, last_page) + 1)


def _int(key: str, text: str, lo: int, hi: int) -> int:
    if not text.isdigit():
        raise FaultRuleError(f"{key}={text!r}: expected a non-negative integer")
    value = int(text)
    if not lo <= value <= hi:
        raise FaultRuleError(f"{key}={value}: must be between {lo} and {hi}")
    return value


def _pages(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    a = _int("pages", first, 0, MAX_PAGE)
    b = _int("pages", last, 0, MAX_PAGE) if sep else a
    if b < a:
        raise FaultRuleError(f"pages={text}: the range is backwards")
    return a, b


def _error(text: str) -> str:
    for name in ERRORS:
        if text.upper() == name.upper() or text.upper() == "ZX_ERR_" + name.upper():
            return name
    raise FaultRuleError(f"error={text!r}: expected one of {', '.join(ERRORS)}")


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultRuleError(f"probability={text!r}: expected a number") from None
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise FaultRuleError(f"probability={text}: must be in (0, 1]")
    return value


def parse_rule(text: str | bytes) -> FaultRule:
    """Parse one rule; raises FaultRuleError with a message fit for a user."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise FaultRuleError("a rule is plain ASCII text") from None
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise FaultRuleError(f"{token!r}: expected key=value")
        if key in fields:
            raise FaultRuleError(f"{key} given twice")
        fields[key] = value
    unknown = set(fields) - {"pages", "error", "count", "probability", "seed", "delay_ms"}
    if unknown:
        raise FaultRuleError(f"unknown key {sorted(unknown)[0]!r}")
    for required in ("pages", "error"):
        if required not in fields:
            raise FaultRuleError(f"{required}= is required")
    first, last = _pages(fields["pages"])
    error = _error(fields["error"])
    count = _int("count", fields["count"], 1, 2**31) if "count" in fields else None
    probability = _probability(fields["probability"]) if "probability" in fields else None
    seed = _int("seed", fields["seed"], 0, 2**63) if "seed" in fields else None
    if seed is not None and probability is None:
        raise FaultRuleError("seed= only makes sense with probability=")
    delay_ms = _int("delay_ms", fields["delay_ms"], 0, MAX_DELAY_MS) if "delay_ms" in fields else 0
    if error == "none" and delay_ms == 0:
        raise FaultRuleError("error=none does nothing without delay_ms=")
    return FaultRule(first, last, error, count, probability, seed, delay_ms)


def check_fits(rule: FaultRule, size: int, page_size: int) -> None:
    """Refuse a rule none of whose pages the file has (a rule that could never fire)."""
    pages = (size + page_size - 1) // page_size
    if rule.first_page >= pages:
        raise FaultRuleError(f"pages={rule.first_page}: the file has {pages} pages"
                             if pages else f"pages={rule.first_page}: the file is empty")


def parse_faults_file(text: str) -> list[tuple[int, str, FaultRule]]:
    """A faults file (`pagerfs mount -o faults=FILE`) -> [(line number, path, rule)].

    One `PATH: RULE` a line; `#` starts a comment, blank lines are skipped. A rule has
    no colon, so the path is everything before the last one (paths may hold colons).
    Raises FaultRuleError naming the line number ("LINE: reason").
    """
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        path, sep, rule_text = line.rpartition(":")
        path = path.strip()
        if not sep or not path:
            raise FaultRuleError(f"{number}: expected 'PATH: RULE'")
        try:
            found.append((number, path, parse_rule(rule_text)))
        except FaultRuleError as err:
            raise FaultRuleError(f"{number}: {err}") from None
    return found


def format_rule(rule: FaultRule) -> str:
    """The canonical text of a rule; parse_rule(format_rule(r)) == r."""
    pages = str(rule.first_page) if rule.npages == 1 else f"{rule.first_page}-{rule.last_page}"
    parts = [f"pages={pages}", f"error={rule.error}"]
    if rule.count is not None:
        parts.append(f"count={rule.count}")
    if rule.probability is not None:
        parts.append(f"probability={rule.probability!r}")
    if rule.seed is not None:
        parts.append(f"seed={rule.seed}")
    if rule.delay_ms:
        parts.append(f"delay_ms={rule.delay_ms}")
    return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Firing:
    """What the rules that fired on one request ask the pager to do."""

    # page -> status name, for pages to FAIL outright (first rule added wins)
    fail: dict[int, str]
    # pages whose bytes are to be altered before verification
    corrupt: frozenset[int]
    delay_ms: int
    # how many rules fired on the request (each rule's own count is in its RuleState)
    rules_fired: int = 0

    @property
    def empty(self) -> bool:
        return not self.fail and not self.corrupt and not self.delay_ms


NO_FIRING = Firing({}, frozenset(), 0)

# Rule ids are unique within the process (one daemon: one mount), so that a client that
# added a rule can name that very rule later, even beside another with the same text.
_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class RuleState:
    """A rule as the control channel reports it: its id and how often it fired."""

    id: int
    rule: FaultRule
    fired: int  # requests the rule acted on (failed, corrupted or delayed)


class _Armed:
    """A rule plus its state: requests left to fire on and its own RNG."""

    def __init__(self, rule: FaultRule):
        self.rule = rule
        self.id = next(_ids)
        self.fired = 0
        self.remaining = rule.count
        self.rng = random.Random(rule.seed if rule.seed is not None else 0)

    @property
    def spent(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def fire(self) -> bool:
        """One matching request: does the rule fire on it? Consumes count and RNG."""
        if self.spent:
            return False
        if self.rule.probability is not None and self.rng.random() >= self.rule.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        self.fired += 1
        return True


class FaultSet:
    """The rules armed on one file. Thread-safe: pager threads fire, the adapter edits.

    Serving a request and changing the rules exclude each other (`serving()` is shared,
    `changing()` exclusive): a request that fired under the old rules must not supply
    its pages after the change has evicted that range, or a page the new rule covers
    would stay present and the rule would never act on it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Armed] = []
        self._gate = threading.Condition(threading.Lock())
        self._serving = 0
        self._changing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def serving(self, wait: bool = True) -> Iterator[bool]:
        """Holds the gate shared; yields True. With wait=False, a thread that must not
        wait (the trio thread) yields False at once instead while rules are changing."""
        with self._gate:
            # Writers first: a steady stream of requests must not starve a rule change.
            while wait and (self._changing or self._writers_waiting):
                self._gate.wait()
            admitted = not (self._changing or self._writers_waiting)
            if admitted:
                self._serving += 1
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:
            with self._gate:
                self._serving -= 1
                if not self._serving:
                    self._gate.notify_all()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        with self._gate:
            self._writers_waiting += 1
            while self._changing or self._serving:
                self._gate.wait()
            self._writers_waiting -= 1
            self._changing = True
        try:
            yield
        finally:
            with self._gate:
                self._changing = False
                self._gate.notify_all()

    def add(self, rule: FaultRule) -> int:
        """Arm a rule; returns its id."""
        armed = _Armed(rule)
        with self._lock:
            self._rules.append(armed)
        return armed.id

    def remove(self, rule_id: int) -> FaultRule | None:
        """Take one rule away by id; the rule removed, or None if there is none."""
        with self._lock:
            for i, armed in enumerate(self._rules):
                if armed.id == rule_id:
                    del self._rules[i]
                    return armed.rule
        return None

    def states(self) -> list[RuleState]:
        with self._lock:
            return [RuleState(a.id, a.rule, a.fired) for a in self._rules]

    def clear(self) -> list[FaultRule]:
        """Remove every rule; returns what was removed (to know which pages to drop)."""
        with self._lock:
            removed = [armed.rule for armed in self._rules]
            self._rules = []
        return removed

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [armed.rule for armed in self._rules]

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._rules)

    def fire(self, first_page: int, last_page: int) -> Firing:
        """Decide one request for pages [first_page, last_page].

        Every rule that shares a page with the request is asked once, in the order the
        rules were added; each one that fires applies to its pages within the request.
        """
        fail: dict[int, str] = {}
        corrupt: set[int] = set()
        delay = 0
        fired = 0
        with self._lock:
            for armed in self._rules:
                rule = armed.rule
                if not rule.overlaps(first_page, last_page) or not armed.fire():
                    continue
                fired += 1
                delay = max(delay, rule.delay_ms)
                pages = rule.clip(first_page, last_page)
                if rule.error in FAIL_ERRORS:
                    for page in pages:
                        fail.setdefault(page, rule.error)
                elif rule.error == "corrupt":
                    corrupt.update(pages)
        if not fail and not corrupt and not delay:
            return NO_FIRING
        return Firing(fail, frozenset(corrupt - fail.keys()), delay, fired)

    def guarded(self, first_page: int, last_page: int) -> bool:
        """Could a rule still fire on a page of this range?

        Read-ahead pages (outside the request, inside a chunk the pager read anyway) are
        supplied only when no live rule covers them, so that a rule always gets to act
        on the request that really asks for its pages.
        """
        with self._lock:
            return any(
                a.rule.overlaps(first_page, last_page) and not a.spent
                and a.rule.error != "none"
                for a in self._rules
            )


def page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted pages -> [(first, count)] runs of consecutive pages."""
    runs: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((page, 1))
    return runs
