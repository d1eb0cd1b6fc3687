"""VMOs: plain (zero-filled, committed on write) and pager-backed (filled by a pager).

Locking: each VMO has one lock that guards its pages, its outstanding requests and its
state. Under it a VMO may take its port's lock (to queue or withdraw packets) and the
scanner's counter lock; nothing else. A thread waiting for a request parks on a lock of
its own (a condition variable by hand: cheaper than threading.Condition on this hot
path), registered with the request under the VMO lock; completing the request releases
every parked thread under the VMO lock, so no wake-up is lost. A waiter that wakes takes
the VMO lock again and copies the pages it asked for before anyone can evict them.

An asynchronous read (the vmo_read_async extension) parks on a request the same way, but
no thread waits for it: the thread that completes the request continues the read under
the same hold of the VMO lock (so its pages cannot be evicted first), and calls the
reader's `done` only after letting go of every kernel lock.
"""

from __future__ import annotations

import os
import threading
from _thread import allocate_lock as _allocate_lock
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import blocking, scanner

from pagerfs.native import load

# No silent slow fallback: a missing or stale build says how to build it.
gather = load("pagerfs.zircon._gather", "the kernel model's native copy",
              "gcc and python3-dev").gather
from .constants import (
    PAGE_SHIFT,
    PAGE_SIZE,
    ZX_ERR_BAD_STATE,
    ZX_ERR_NOT_FOUND,
    ZX_OBJ_TYPE_VMO,
    ZX_OK,
    ZX_PAGER_VMO_COMPLETE,
    ZX_PAGER_VMO_READ,
    ZX_VMO_RESIZABLE,
)
from .errors import ZxError
from .handles import KObject
from .port import Port, page_request_packet
from .ranges import Extent, PageStore

if TYPE_CHECKING:
    from .pager import Pager

_MASK = PAGE_SIZE - 1


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


# A read returns a new buffer: one larger than the machine's memory cannot exist (in
# Zircon the caller could not have passed it), so such a read fails with NO_MEMORY
# before it asks any pager.
MAX_BUFFER = _physical_memory()


def join(pieces: list) -> bytes:
    """One copy of the gathered views into a new bytes object; a big one (a 1 MiB FUSE
    READ) is copied without the GIL, so pager threads run on meanwhile."""
    return gather(pieces)


class Vmo(KObject):
    """A plain VMO: absent pages read as zeros; writes commit pages."""

    obj_type = ZX_OBJ_TYPE_VMO
    pager_backed = False
    __slots__ = ("lock", "store", "size", "options", "mappings", "freed")

    def __init__(self, size: int, options: int) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.store = PageStore()
        self.size = size
        self.options = options
        self.mappings = 0
        self.freed = False

    @property
    def resizable(self) -> bool:
        return bool(self.options & ZX_VMO_RESIZABLE)

    def committed_bytes(self) -> int:
        return self.store.pages << PAGE_SHIFT

    # The callers (syscalls) have checked that [pos, end) lies inside the VMO.
    def read(self, pos: int, end: int) -> bytes:
        out: list = []
        with self.lock:
            self.store.gather_filled(pos, end, out)
        return join(out)

    def read_mapped(self, pos: int, end: int, mapping: object) -> tuple[list, int, int]:
        out: list = []
        with self.lock:
            self.store.gather_filled(pos, end, out)
        return out, end, ZX_OK

    def read_async(self, pos: int, end: int, done: Callable[[int, bytes | None], None]
                   ) -> bytes | None:
        return self.read(pos, end)  # nothing to wait for

    def write(self, pos: int, data: memoryview) -> None:
        with self.lock:
            self.store.write(pos, data)

    def commit(self, pos: int, end: int) -> None:
        first, last = pos >> PAGE_SHIFT, (end + _MASK) >> PAGE_SHIFT
        with self.lock:
            self.store.fill_absent(first, last, [], 0)

    def decommit(self, pos: int, end: int) -> None:
        first, last = pos >> PAGE_SHIFT, (end + _MASK) >> PAGE_SHIFT
        with self.lock:
            self.store.remove(first, last)

    def take_pages(self, first: int, last: int) -> list[Extent]:
        """Move the pages [first, last) out (zx_pager_supply_pages' aux side)."""
        with self.lock:
            return self.store.take(first, last)

    def unmapped(self) -> None:
        with self.lock:
            self.mappings -= 1
            if self.mappings == 0 and self.handle_count == 0:
                self.store.clear()

    def on_zero_handles(self) -> None:
        with self.lock:
            if self.mappings == 0:
                self.store.clear()


class Request:
    """An outstanding READ request for the pages [start, end)."""

    __slots__ = ("start", "end", "remaining", "status", "parked", "waiters", "pins", "token")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        # Page runs not yet supplied since the request was raised; it completes when
        # this is empty, whatever happened to the pages afterwards (eviction).
        self.remaining: list[tuple[int, int]] = [(start, end)]
        self.status: int | None = None
        # Released on completion: locks of the threads waiting, and asynchronous reads.
        # Once it has completed and is pinned: the locks of evictions waiting for its
        # readers to collect its pages (see PagerVmo.evict), released with the last pin.
        self.parked: list = []
        self.waiters = 0
        self.pins = 0
        self.token: int | None = None

    def supplied(self, a: int, b: int) -> bool:
        """Note that [a, b) was supplied; True once every page has been."""
        rem = self.remaining
        if len(rem) == 1:
            s, e = rem[0]
            if a <= s and b >= e:
                rem.clear()
                return True
            if b <= s or a >= e:
                return False
        left: list[tuple[int, int]] = []
        for s, e in rem:
            if b <= s or a >= e:
                left.append((s, e))
                continue
            if s < a:
                left.append((s, a))
            if e > b:
                left.append((b, e))
        self.remaining = left
        return not left


class AsyncRead:
    """A read of [pos, end) whose caller does not wait: parked on one request at a time,
    continued by whichever thread completes it (see the module's locking note)."""

    __slots__ = ("vmo", "pos", "end", "last", "out", "stamp", "done", "req", "status")

    def __init__(self, vmo: "PagerVmo", pos: int, end: int,
                 done: Callable[[int, bytes | None], None]) -> None:
        self.vmo = vmo
        self.pos = pos
        self.end = end
        self.last = (end + _MASK) >> PAGE_SHIFT
        self.out: list = []
        self.stamp = scanner.tick()
        self.done = done
        self.req: Request | None = None
        self.status: int | None = None

    def release(self) -> None:
        # Called by _complete, VMO lock held: the VMO continues the read once it has
        # finished with its list of requests.
        self.vmo._resumed.append(self)

    def finish(self) -> None:
        """Tell the reader; no kernel lock may be held."""
        if self.status == ZX_OK:
            self.done(ZX_OK, join(self.out))
        else:
            self.done(self.status, None)


class PagerVmo(Vmo):
    """A VMO whose pages come from a pager, asked for through packets on a port."""

    pager_backed = True
    __slots__ = ("pager", "port", "key", "detached", "_reqs", "_req_starts", "_pinned",
                 "_resumed")

    def __init__(self, size: int, options: int, pager: "Pager", port: Port, key: int) -> None:
        super().__init__(size, options)
        self.pager = pager
        self.port = port
        self.key = key
        self.detached = False
        self._reqs: list[Request] = []  # disjoint, sorted by start
        self._req_starts: list[int] = []
        self._pinned: list[Request] = []
        self._resumed: list[AsyncRead] = []  # asynchronous reads whose request ended
        scanner.register(self)

    # --- requests (VMO lock held) -------------------------------------------------
    def _covering(self, page: int) -> tuple[int, Request | None]:
        i = bisect_right(self._req_starts, page) - 1
        if i >= 0 and self._reqs[i].end > page:
            return i, self._reqs[i]
        return i + 1, None

    def _request_for(self, page: int, last: int) -> Request | None:
        """The request a reader of absent `page` waits on: the outstanding one that
        covers it, or a new one for the absent run up to `last`, stopping before a
        present page or another request. None once the VMO is detached."""
        i, req = self._covering(page)
        if req is not None:
            return req
        if self.detached:
            return None
        stop = self.store.next_present(page, last)
        if i < len(self._reqs) and self._reqs[i].start < stop:
            stop = self._reqs[i].start
        return self._raise_request(i, page, stop)

    def _raise_request(self, index: int, start: int, end: int) -> Request:
        req = Request(start, end)
        self._reqs.insert(index, req)
        self._req_starts.insert(index, start)
        req.token = self.port.queue(
            page_request_packet(
                self.key, ZX_PAGER_VMO_READ, start << PAGE_SHIFT, (end - start) << PAGE_SHIFT
            )
        )
        return req

    def _complete(self, req: Request, status: int) -> None:
        i = bisect_right(self._req_starts, req.start) - 1
        del self._reqs[i]
        del self._req_starts[i]
        req.status = status
        if req.token is not None:
            self.port.withdraw(req.token)
        if req.waiters and status == ZX_OK:
            req.pins = req.waiters
            self._pinned.append(req)
        for parked in req.parked:
            parked.release()
        req.parked = []

    def _unpin(self, req: Request) -> None:
        req.pins -= 1
        if req.pins == 0:
            self._pinned.remove(req)
            if req.parked:  # evictions waiting for this (see evict)
                for parked in req.parked:
                    parked.release()
                req.parked = []

    def pending_requests(self) -> list[tuple[int, int]]:
        """The outstanding requests' page ranges (for tests and diagnostics)."""
        with self.lock:
            return [(r.start, r.end) for r in self._reqs]

    # --- access -------------------------------------------------------------------
    def fetch(
        self, pos: int, end: int, out: list | None, one_page: bool, mapping: object = None
    ) -> tuple[int, int]:
        """Make [pos, end) present, asking the pager for what is absent.

        With `out`, appends views of the bytes as it goes (copying what is present, then
        waiting at the first absent page, then continuing from there). Returns
        (end, ZX_OK), or (byte where it stopped, status) when a request failed.
        """
        last = (end + _MASK) >> PAGE_SHIFT
        store = self.store
        stamp = scanner.tick()
        pinned: Request | None = None
        lock = self.lock
        with lock:
            while True:
                if out is not None:
                    pos = store.gather(pos, end, out, stamp)
                else:
                    pos = store.first_absent(pos >> PAGE_SHIFT, last) << PAGE_SHIFT
                    if pos > end:
                        pos = end
                if pinned is not None:
                    self._unpin(pinned)
                    pinned = None
                if pos >= end:
                    return end, ZX_OK
                page = pos >> PAGE_SHIFT
                req = self._request_for(page, page + 1 if one_page else last)
                if req is None:
                    return pos, ZX_ERR_BAD_STATE
                req.waiters += 1
                parked = _allocate_lock()
                parked.acquire()
                req.parked.append(parked)
                blocking.enter(req)
                lock.release()
                try:
                    parked.acquire()
                except BaseException:
                    # Leaving early (an interrupt in the wait): give back our share
                    # so that the request's pages do not stay pinned for us.
                    lock.acquire()
                    if req.status is None:
                        req.waiters -= 1
                        req.parked.remove(parked)
                    elif req.status == ZX_OK:
                        self._unpin(req)
                    raise
                else:
                    lock.acquire()
                finally:
                    blocking.leave()
                status = req.status
                if status != ZX_OK:
                    return pos, status
                pinned = req
                if mapping is not None and getattr(mapping, "is_unmapped", False):
                    self._unpin(pinned)
                    return pos, ZX_ERR_NOT_FOUND

    def read(self, pos: int, end: int) -> bytes:
        out: list = []
        stop, status = self.fetch(pos, end, out, False)
        if status != ZX_OK:
            raise ZxError(status)
        return join(out)

    def read_mapped(self, pos: int, end: int, mapping: object) -> tuple[list, int, int]:
        out: list = []
        stop, status = self.fetch(pos, end, out, True, mapping)
        return out, stop, status

    def read_async(self, pos: int, end: int, done: Callable[[int, bytes | None], None]
                   ) -> bytes | None:
        op = AsyncRead(self, pos, end, done)
        with self.lock:
            finished = self._advance(op)
        if not finished:
            return None
        if op.status != ZX_OK:
            raise ZxError(op.status)
        return join(op.out)

    def _advance(self, op: AsyncRead) -> bool:
        """Collect views of what is present, then park on the request for the first
        absent page (raising it as fetch would). True once the read has ended. VMO lock
        held."""
        pos = op.pos = self.store.gather(op.pos, op.end, op.out, op.stamp)
        if pos >= op.end:
            op.status = ZX_OK
            return True
        req = self._request_for(pos >> PAGE_SHIFT, op.last)
        if req is None:
            op.status = ZX_ERR_BAD_STATE
            return True
        op.req = req
        req.parked.append(op)
        return False

    def _continue_reads(self) -> list[AsyncRead]:
        """Continue the asynchronous reads whose requests ended; the ones that are
        finished, to be told once the VMO lock is released. VMO lock held."""
        finished = []
        while self._resumed:
            ops, self._resumed = self._resumed, []
            for op in ops:
                status = op.req.status
                if status != ZX_OK:
                    op.status = status
                    finished.append(op)
                elif self._advance(op):
                    finished.append(op)
        return finished

    def commit(self, pos: int, end: int) -> None:
        pos &= ~_MASK
        end = (end + _MASK) & ~_MASK
        _stop, status = self.fetch(pos, end, None, False)
        if status != ZX_OK:
            raise ZxError(status)

    def write(self, pos: int, data: memoryview) -> None:
        # Zircon of this era lets a pager VMO be written: the pages are faulted in
        # first, then changed in place (no writeback: the pager never hears of it).
        end = pos + len(data)
        first, last = pos >> PAGE_SHIFT, (end + _MASK) >> PAGE_SHIFT
        while True:
            self.commit(pos, end)
            with self.lock:
                if self.store.first_absent(first, last) >= last:
                    self.store.write(pos, data, scanner.tick())
                    return

    # --- the pager's side -----------------------------------------------------------
    def supply(self, first: int, last: int, incoming: list[Extent], shift: int) -> None:
        with self.lock:
            if self.detached:
                raise ZxError(ZX_ERR_BAD_STATE)
            added = self.store.fill_absent(first, last, incoming, shift, scanner.tick())
            reqs = self._reqs
            i = bisect_right(self._req_starts, first) - 1
            if i < 0 or reqs[i].end <= first:
                i += 1
            while i < len(reqs) and reqs[i].start < last:
                req = reqs[i]
                if req.supplied(first, last):
                    self._complete(req, ZX_OK)
                else:
                    i += 1
            scanner.account(added)
            finished = self._continue_reads() if self._resumed else ()
        # The budget's eviction pass first, as for a blocked reader: when a read
        # returns, its supply has been paid for.
        scanner.over_limit()
        for op in finished:
            op.finish()

    def fail(self, first: int, last: int, status: int) -> None:
        if first >= last:
            return
        with self.lock:
            if self.detached:
                return
            hit = [r for r in self._reqs if r.start < last and r.end > first]
            for req in hit:
                self._complete(req, status)
            finished = self._continue_reads() if self._resumed else ()
        for op in finished:
            op.finish()

    def detach(self, send_complete: bool = True) -> None:
        with self.lock:
            if self.detached:
                return
            self.detached = True
            for req in list(self._reqs):
                self._complete(req, ZX_ERR_BAD_STATE)
            finished = self._continue_reads() if self._resumed else ()
            if send_complete:
                self.port.queue(page_request_packet(self.key, ZX_PAGER_VMO_COMPLETE, 0, 0))
        for op in finished:
            op.finish()

    # --- the scanner's side ---------------------------------------------------------
    def _pinned_ranges(self) -> list[tuple[int, int]]:
        return [(r.start, r.end) for r in self._pinned]

    def evict(self, first: int, last: int) -> int:
        """Eviction on demand (scanner_evict). A page that readers were woken for but
        have not yet collected is pinned; rather than leave it present, wait for the
        readers pinning pages of the range now to collect them, then evict. The wait is
        short and cannot deadlock: such a reader needs nothing but the VMO lock. A
        request pinned while this waits is left alone, as the budget's pass does, so a
        stream of readers cannot hold an eviction off for ever."""
        with self.lock:
            for req in [r for r in self._pinned if r.start < last and r.end > first]:
                if not req.pins:
                    continue  # collected while this waited for another
                parked = _allocate_lock()
                parked.acquire()
                req.parked.append(parked)
                blocking.enter(req)
                self.lock.release()
                try:
                    parked.acquire()
                finally:
                    self.lock.acquire()
                    blocking.leave()
            dropped = self.store.remove(first, last, self._pinned_ranges())
            scanner.account(-dropped)
        return dropped

    def extents_snapshot(self) -> list[Extent]:
        with self.lock:
            return self.store.extents()

    def evict_extent(self, ext: Extent) -> int:
        with self.lock:
            if not self.store.holds(ext):
                return 0
            for s, e in self._pinned_ranges():
                if s < ext.end and e > ext.start:
                    return 0
            dropped = self.store.remove(ext.start, ext.end)
            scanner.account(-dropped)
        return dropped

    def _free(self) -> None:
        with self.lock:
            if self.freed:
                return
            self.freed = True
            dropped = self.store.clear()
            scanner.account(-dropped)
        scanner.unregister(self)

    # --- lifetime -------------------------------------------------------------------
    def unmapped(self) -> None:
        with self.lock:
            self.mappings -= 1
            free = self.mappings == 0 and self.handle_count == 0
        if free:
            self._free()

    def on_zero_handles(self) -> None:
        self.detach(send_complete=True)
        self.pager.forget(self)
        with self.lock:
            free = self.mappings == 0
        if free:
            self._free()
