"""Counters of what the pager did, per file and in total, for user.pagerfs.stats."""

from __future__ import annotations

import collections
import threading

# pages_supplied counts pages handed to zx_pager_supply_pages. The kernel skips pages
# already present, so it can exceed a file's size in pages: read-ahead may supply a
# chunk a request is serving too, and pages evicted under the budget are supplied again.
# rule_firings counts (request, rule) pairs on which a fault rule acted: unlike a rule's
# own count it outlives the rule, so "did any rule of this file ever fire" has an answer.
FIELDS = ("page_requests", "pages_requested", "pages_supplied", "chunks_read",
          "bytes_read_from_image", "delays", "rule_firings")


class Stats:
    """Thread-safe counters keyed by inode; pages_failed is split by status name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, ino: int, **counts: int) -> None:
        # Called a few times for every chunk served: plain additions, not
        # Counter.update (which checks its argument's type on every call).
        with self._lock:
            mine = self._counts[ino]
            for name, n in counts.items():
                mine[name] += n

    def failed(self, ino: int, status: str, pages: int) -> None:
        """Count pages failed with `status` (negative: take back a count whose FAIL
        the kernel refused)."""
        with self._lock:
            self._counts[ino]["pages_failed:" + status] += pages

    def failing(self, limit: int = 20) -> dict[int, dict[str, int]]:
        """Inodes that had pages failed -> {status: pages}, the most failed first."""
        with self._lock:
            found = {
                ino: {k.split(":", 1)[1]: v for k, v in counts.items()
                      if k.startswith("pages_failed:") and v > 0}
                for ino, counts in self._counts.items()
            }
        found = {ino: by for ino, by in found.items() if by}
        ranked = sorted(found, key=lambda ino: -sum(found[ino].values()))[:limit]
        return {ino: found[ino] for ino in ranked}

    def snapshot(self, ino: int | None = None) -> dict:
        """One file's counters, or (ino None) the sum over all files."""
        with self._lock:
            if ino is None:
                total: collections.Counter = collections.Counter()
                for counts in self._counts.values():
                    total.update(counts)
            else:
                total = collections.Counter(self._counts.get(ino, {}))
        out: dict = {name: total.get(name, 0) for name in FIELDS}
        out["pages_failed"] = {
            key.split(":", 1)[1]: value for key, value in sorted(total.items())
            if key.startswith("pages_failed:") and value > 0
        }
        return out
