"""Order statistics for benchmark samples: no numpy, so the bench's own arithmetic is
small enough to test by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100), interpolating linearly between the two
    nearest ranks, as numpy's default does; one sample is its own every percentile."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Summary:
    """One figure over the rounds: what the table prints as `median [min–max]`."""

    median: float
    lo: float
    hi: float
    samples: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.lo, "max": self.hi, "samples": list(self.samples)}


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(median(values), float(min(values)), float(max(values)), tuple(float(v) for v in values))


def ratio(ours: float, peer: float) -> float | None:
    """ours/peer, or None when the peer's figure is zero (no meaningful ratio)."""
    if peer == 0:
        return None
    return ours / peer
