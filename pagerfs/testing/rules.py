"""testing.Rule: a fault rule for one file, as a value."""

from __future__ import annotations

import dataclasses
import os

from pagerfs.pager.faults import FaultRule, FaultRuleError, format_rule, parse_rule
from pagerfs.testing.errors import RuleError


def _pages_text(pages) -> str:
    if isinstance(pages, bool):
        raise RuleError(f"pages={pages!r}: expected a page number, a range or 'A-B'")
    if isinstance(pages, int):
        return str(pages)
    if isinstance(pages, range):
        if pages.step != 1 or not pages:
            raise RuleError(f"pages={pages!r}: expected a non-empty range with step 1")
        return f"{pages.start}-{pages.stop - 1}"
    if isinstance(pages, str):
        return pages.strip()
    raise RuleError(f"pages={pages!r}: expected a page number, a range or 'A-B'")


def rule_text(pages, error="IO", count=None, probability=None, seed=None,
              delay_ms=None) -> str:
    """The canonical rule text (`pages=A-B error=E ...`); RuleError if it is malformed."""
    parts = [f"pages={_pages_text(pages)}", f"error={error}"]
    for key, value in (("count", count), ("probability", probability), ("seed", seed),
                       ("delay_ms", delay_ms)):
        if value is not None:
            parts.append(f"{key}={value}")
    try:
        return format_rule(parse_rule(" ".join(parts)))
    except FaultRuleError as err:
        raise RuleError(f"bad rule {' '.join(parts)!r}: {err}") from None


@dataclasses.dataclass(frozen=True)
class Rule:
    """A fault rule for the file at `path` (relative to the image's root).

    `pages` is a page number, a range (`range(2, 5)`: pages 2, 3 and 4) or the text
    `"A-B"` (inclusive). str(rule) is the rule's text, `pages=A-B error=E ...`, as
    `setfattr -n user.pagerfs.fault -v` takes it.
    """

    path: str | os.PathLike | None
    pages: int | range | str
    error: str = "IO"
    count: int | None = None
    probability: float | None = None
    seed: int | None = None
    delay_ms: int | None = None

    def __post_init__(self) -> None:
        self.text  # refuse a malformed rule when it is made, not when it is armed

    @property
    def text(self) -> str:
        return rule_text(self.pages, self.error, self.count, self.probability, self.seed,
                         self.delay_ms)

    @property
    def fault_rule(self) -> FaultRule:
        return parse_rule(self.text)

    @property
    def line(self) -> str:
        """The rule as one line of a faults file: `PATH: RULE`."""
        if self.path is None:
            raise RuleError(f"rule {self.text!r} has no path")
        return f"{os.fspath(self.path)}: {self.text}"

    def __str__(self) -> str:
        return self.text


def as_rule(item) -> Rule:
    """A Rule from a Rule or a (path, rule text) pair."""
    if isinstance(item, Rule):
        return item
    try:
        path, text = item
    except (TypeError, ValueError):
        raise RuleError(f"{item!r}: expected a testing.Rule or a (path, rule text) pair") from None
    try:
        rule = parse_rule(str(text))
    except FaultRuleError as err:
        raise RuleError(f"{os.fspath(path)}: bad rule {str(text)!r}: {err}") from None
    pages = rule.first_page if rule.npages == 1 else range(rule.first_page, rule.last_page + 1)
    return Rule(path, pages, rule.error, rule.count, rule.probability, rule.seed,
                rule.delay_ms or None)
