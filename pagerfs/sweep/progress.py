"""The progress bar: one line on stderr, redrawn as runs end."""

from __future__ import annotations

import sys
import threading

from pagerfs.sweep.verdict import VERDICTS


class Bar:
    def __init__(self, total: int, enabled: bool, stream=None):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.tally: dict[str, int] = {}
        self._lock = threading.Lock()

    def line(self) -> str:
        frac = self.done / self.total
        bar = "#" * int(frac * 30)
        tally = " ".join(f"{v} {self.tally[v]}" for v in VERDICTS if v in self.tally)
        return f"sweep [{bar:<30}] {self.done}/{self.total} {tally}"

    def advance(self, verdict: str) -> None:
        with self._lock:
            self.done += 1
            self.tally[verdict] = self.tally.get(verdict, 0) + 1
            if self.enabled:
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
