"""Pages to ranges: `0-3, 7, 9-12`."""

from __future__ import annotations

from collections.abc import Iterable


def merge(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct pages -> [(first, last)] of consecutive runs."""
    runs: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], page)
        else:
            runs.append((page, page))
    return runs


def format_ranges(runs: Iterable[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
