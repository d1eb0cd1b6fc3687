"""What every subcommand shares: exit statuses, the one-line error, a progress bar."""

from __future__ import annotations

import argparse
import sys
import time

EXIT_OK = 0
EXIT_DAMAGE = 1
EXIT_UNUSABLE = 2

# The control channel's attributes (served by pagerfs/fuse/xattrs.py), as the commands
# and pagerfs.testing drive them.
STATS = "user.pagerfs.stats"
FAULT = "user.pagerfs.fault"
FAULTS = "user.pagerfs.faults"
UNFAULT = "user.pagerfs.unfault"


class CommandError(Exception):
    """A failure to report as one line and an exit status."""

    def __init__(self, message: str, exit_status: int = EXIT_UNUSABLE):
        super().__init__(message)
        self.exit_status = exit_status


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def fail(message: str, status: int) -> int:
    print(f"pagerfs: {message}", file=sys.stderr)
    return status


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total_bytes: int, label: str, enabled: bool = True):
        self.total = max(total_bytes, 1)
        self.label = label
        self.done = 0
        self.files = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._last_draw = 0.0

    def advance(self, nbytes: int, files: int = 0) -> None:
        self.done += nbytes
        self.files += files
        now = time.monotonic()
        if self.enabled and now - self._last_draw > 0.1:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {frac:6.1%} {self.done / 2**20:,.1f} MiB, {self.files} files"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()
