"""Which runs a sweep makes: one per target, a target being some pages of one file
failed with one error kind.

The plan comes from the pages the clean run touched (its trace's READs, one page each
with the kernel's read-ahead off), so no run is spent on a page the program never asks
for. Cases are numbered from 1 in a fixed order (file, page, error), which with
--sample's seeded draw makes the same sweep give the same cases.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import random
from collections.abc import Iterable, Mapping

PAGE = 4096
# What `--error` may name: the rule kinds that fail something (not `none`).
ERRORS = ("IO", "IO_DATA_INTEGRITY", "BAD_STATE", "corrupt")
DEFAULT_ERROR = "IO_DATA_INTEGRITY"
# A transient fault fails one read() and the kernel's own retry of it (README, count=).
TRANSIENT_COUNT = 2


class PlanError(ValueError):
    """A sweep that cannot be planned, in one line."""


@dataclasses.dataclass(frozen=True)
class Target:
    case: int
    path: str          # relative to the mount, no leading slash
    pages: tuple[int, ...]  # the touched pages this run fails
    error: str
    transient: bool = False
    # --probability: the rule fails each request for its pages with this chance, drawn
    # from the rule's own generator seeded with `seed`, so a run is reproducible.
    probability: float | None = None
    seed: int | None = None

    @property
    def first(self) -> int:
        return self.pages[0]

    @property
    def last(self) -> int:
        return self.pages[-1]

    @property
    def rule(self) -> str:
        """The fault rule, as `setfattr -n user.pagerfs.fault` takes it. A group's range
        may span pages the program never touched: those never fire."""
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        count = f" count={TRANSIENT_COUNT}" if self.transient else ""
        chance = (f" probability={self.probability:g} seed={self.seed}"
                  if self.probability is not None else "")
        return f"pages={span} error={self.error}{count}{chance}"


def touched_pages(events: Iterable[Mapping]) -> dict[str, tuple[int, ...]]:
    """{relative path: sorted pages} from the trace's `read` events."""
    found: dict[str, set[int]] = {}
    for event in events:
        if event.get("event") != "read" or event.get("length", 0) <= 0:
            continue
        first = event["offset"] // PAGE
        last = (event["offset"] + event["length"] - 1) // PAGE
        found.setdefault(event["path"].lstrip("/"), set()).update(range(first, last + 1))
    return {path: tuple(sorted(pages)) for path, pages in sorted(found.items())}


def parse_errors(text: str) -> tuple[str, ...]:
    """`IO,corrupt` -> ("IO", "corrupt"); names as the fault rules spell them."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise PlanError("--error: name at least one of " + ", ".join(ERRORS))
    for name in names:
        if name not in ERRORS:
            raise PlanError(f"--error {name}: expected one of {', '.join(ERRORS)}")
    return tuple(dict.fromkeys(names))


def select_files(touched: Mapping[str, tuple[int, ...]], image_files: Iterable[str],
                 globs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The touched files that the --files globs name (all of them without a glob).

    A glob matches a path relative to the image's root (a leading / is ignored; `*`
    also matches /). One that names no file of the image is a mistake, not an empty
    sweep; so is a selection of which the program read nothing.
    """
    globs = [g.lstrip("/") for g in globs]
    if not globs:
        chosen = dict(touched)
    else:
        files = sorted(set(image_files))
        for glob in globs:
            if not any(fnmatch.fnmatchcase(f, glob) for f in files):
                raise PlanError(f"--files {glob}: matches no file in the image")
        chosen = {path: pages for path, pages in touched.items()
                  if any(fnmatch.fnmatchcase(path, g) for g in globs)}
    if not chosen:
        if globs:
            raise PlanError("the clean run read no page of the files --files selects: "
                            "nothing to sweep")
        raise PlanError("the clean run read no page of any file in the image: nothing to "
                        "sweep (does the command name the mount as {} or $PAGERFS_MNT?)")
    return chosen


def make_plan(touched: Mapping[str, tuple[int, ...]], errors: Iterable[str], *,
              group: int = 1, sample: int | None = None, seed: int = 0,
              transient: bool = False, probability: float | None = None,
              ) -> tuple[Target, ...]:
    """One target per `group` consecutive touched pages of each file and error kind;
    with `sample`, that many of them drawn with `seed`, in plan order. With
    `probability`, each rule fires with that chance, drawn from `seed` too."""
    if group < 1:
        raise PlanError(f"--group {group}: expected at least 1")
    if sample is not None and sample < 1:
        raise PlanError(f"--sample {sample}: expected at least 1")
    if probability is not None and not 0 < probability <= 1:
        raise PlanError(f"--probability {probability:g}: expected more than 0, at most 1")
    errors = tuple(errors)
    units = []
    for path, pages in sorted(touched.items()):
        for i in range(0, len(pages), group):
            for error in errors:
                units.append((path, tuple(pages[i:i + group]), error))
    if sample is not None and sample < len(units):
        keep = sorted(random.Random(seed).sample(range(len(units)), sample))
        units = [units[i] for i in keep]
    # Each rule has a seed of its own, drawn from --seed, so that pages do not all
    # meet the same sequence of draws.
    seeds = random.Random(f"{seed}/rules")
    return tuple(Target(case, path, pages, error, transient, probability,
                        seeds.randrange(2**31) if probability is not None else None)
                 for case, (path, pages, error) in enumerate(units, 1))
