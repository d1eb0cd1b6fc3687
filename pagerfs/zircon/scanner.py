"""The page scanner: the kernel's own eviction of pager-backed pages.

It keeps the kernel-wide count of committed pager-backed pages and, when a budget is
set, evicts the least recently used extents after a supply pushes the count past it.
Recency is tracked per extent (a stamp set whenever a read copies from it), not per page.
Eviction never removes pages of a request whose waiters have not yet copied them
(see PagerVmo's pins), so a reader always makes progress: the budget's pass skips them,
eviction on demand (PagerVmo.evict) waits for those waiters first.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import TYPE_CHECKING

from .constants import PAGE_SHIFT

if TYPE_CHECKING:
    from .vmo import PagerVmo

tick = itertools.count(1).__next__

_lock = threading.Lock()  # a leaf lock: taken under VMO locks, never the other way
_pass_lock = threading.Lock()  # one eviction pass at a time; taken before VMO locks
_committed_pages = 0
_limit_pages: int | None = None
_vmos: weakref.WeakSet[PagerVmo] = weakref.WeakSet()


def register(vmo: "PagerVmo") -> None:
    with _lock:
        _vmos.add(vmo)


def unregister(vmo: "PagerVmo") -> None:
    with _lock:
        _vmos.discard(vmo)


def account(delta_pages: int) -> None:
    global _committed_pages
    if delta_pages:
        with _lock:
            _committed_pages += delta_pages


def committed_bytes() -> int:
    return _committed_pages << PAGE_SHIFT


def limit_bytes() -> int | None:
    return None if _limit_pages is None else _limit_pages << PAGE_SHIFT


def set_limit(max_bytes: int | None) -> None:
    global _limit_pages
    _limit_pages = None if max_bytes is None else max_bytes >> PAGE_SHIFT
    over_limit()


def over_limit() -> None:
    """Evict LRU extents if committed pages exceed the budget (called after supplies)."""
    limit = _limit_pages
    if limit is None or _committed_pages <= limit:
        return
    with _pass_lock:
        limit = _limit_pages
        if limit is None or _committed_pages <= limit:
            return
        # Evict a little below the budget so that a stream of supplies does not pay
        # for a pass each time.
        target = limit - (limit >> 4)
        with _lock:
            vmos = list(_vmos)
        candidates = []
        for vmo in vmos:
            for ext in vmo.extents_snapshot():
                candidates.append((ext.stamp, id(ext), vmo, ext))
        candidates.sort(key=lambda c: (c[0], c[1]))
        for _stamp, _ident, vmo, ext in candidates:
            if _committed_pages <= target:
                break
            vmo.evict_extent(ext)
