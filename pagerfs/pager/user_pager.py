"""The user pager: one pager, one port, a pool of threads serving page requests.

Each open regular file is a pager-backed VMO whose key on the port is its inode number;
the VMO lives while some opener holds it (refcounted) and is closed — which detaches it
— when the last one lets go, in batches (see close). Pager threads wait on the port and serve each READ request
through RequestServer. Fault rules are kept per inode, independent of open VMOs, so a
rule set on a closed file applies when it is next opened.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time

from pagerfs import zircon as zx
from pagerfs.pager.faults import FaultRule, FaultSet, RuleState
from pagerfs.pager.serve import PAGE, RequestServer
from pagerfs.pager.stats import Stats
from pagerfs.pager.trace import Trace

log = logging.getLogger("pagerfs.pager")

DEFAULT_THREADS = 4
# Read-ahead threads: decompressing and verifying ahead of a sequential reader is the
# mount's main CPU work, and lz4 and SHA-256 release the GIL, so one per core.
AHEAD_THREADS = min(os.cpu_count() or 1, 4)
# Chunks per read-ahead job (see _schedule_ahead).
AHEAD_RUN = 2
DEFAULT_BUDGET = 256 * 2**20
# Below this, one 256 KiB FUSE read per blocked worker could evict its own first pages
# before its last ones arrive, and readers would chase each other forever.
MIN_BUDGET = 16 * 2**20
# VMOs of closed files detached together (see close).
CLOSE_BATCH = 32
_WAKE_KEY = 0  # no inode is 0: a COMPLETE packet with this key only wakes a thread


@dataclasses.dataclass
class _OpenVmo:
    handle: int
    refs: int


class UserPager:
    def __init__(self, image, *, threads: int = DEFAULT_THREADS,
                 budget: int | None = DEFAULT_BUDGET, trace: Trace | None = None,
                 read_ahead: int | None = None, close_batch: int = CLOSE_BATCH):
        if budget is not None and budget < MIN_BUDGET:
            raise ValueError(f"a page budget below {MIN_BUDGET // 2**20} MiB cannot work")
        self.image = image
        self.budget = budget
        self.stats = Stats()
        self.trace = trace or Trace(None)
        self.pager = zx.zx_pager_create(0)
        self.port = zx.zx_port_create(0)
        self.server = RequestServer(image, self.pager, self.stats, self.trace)
        if read_ahead is not None:
            self.server.read_ahead = read_ahead
        # Sequential read-ahead runs on threads of its own, in jobs of a few chunks
        # (AHEAD_RUN) so that they share a stream's chunks, and the pager threads stay
        # free for the requests readers are waiting on.
        self._ahead: queue.SimpleQueue = queue.SimpleQueue()
        self._ahead_pending = 0  # read-ahead jobs queued or being read
        self._serving_now = 0  # threads inside _serving()
        self._idle = threading.Condition()
        self.server.schedule = self._schedule_ahead
        self._lock = threading.Lock()
        self._vmos: dict[int, _OpenVmo] = {}
        # VMO handles of closed files not detached yet (see close).
        self._closing: list[int] = []
        self.close_batch = close_batch
        self._faults: dict[int, FaultSet] = {}
        # Threads serving a file that had no rules when they began, by inode (see
        # _serving); _faultset waits for them after making a file's first FaultSet.
        self._plain: dict[int, int] = {}
        self._plain_done = threading.Condition(self._lock)
        self._stop = threading.Event()
        # The aux VMO of whichever thread opens files (see open).
        self._open_aux = zx.zx_vmo_create(image.chunk_size, 0)
        self._open_lock = threading.Lock()
        # serve_here: the aux VMO of the thread that serves its own request, and the
        # requests it took from the port but must leave to a pager thread.
        self._here_aux = zx.zx_vmo_create(image.chunk_size, 0)
        self._here_lock = threading.Lock()
        self._handoff: collections.deque = collections.deque()
        self._opened = bytearray()  # by inode: 1 once opened (see open)
        zx.scanner_set_limit(budget)
        self._threads = [
            threading.Thread(target=self._run, name=f"pager-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads += [
            threading.Thread(target=self._run_ahead, name=f"pager-ahead-{i}", daemon=True)
            for i in range(AHEAD_THREADS)
        ]
        for thread in self._threads:
            thread.start()

    # -- VMOs ---------------------------------------------------------------------------

    def open(self, ino: int, size: int | None = None) -> int:
        """The VMO of a regular file (of `size` bytes, if the caller has it at hand),
        created on first open; pair with close().

        A file of one chunk is supplied whole as its VMO is created, the first time it
        is opened, in the opener's thread: it will be read (that is what opening a file
        is for), its first read would ask for all of it anyway, and answering that read
        from present pages spares the two thread hand-offs of a page request, which for
        a small file cost more than the decoding itself (a tree of small files is
        mostly such costs). Only the first time: a file opened again is most likely
        still in the host's page cache, and then nobody asks for its pages at all.
        """
        supply_now = False
        with self._lock:
            entry = self._vmos.get(ino)
            if entry is None:
                if size is None:
                    size = self.image.stat(ino).size
                handle = zx.zx_pager_create_vmo(self.pager, 0, self.port, ino, size)
                entry = self._vmos[ino] = _OpenVmo(handle, 0)
                supply_now = 0 < size <= self.image.chunk_size and not self._opened_before(ino)
            entry.refs += 1
            handle = entry.handle
        if supply_now:
            self._supply_at_open(ino, handle)
        return handle

    def _opened_before(self, ino: int) -> bool:
        """Whether the file was opened before; marks it opened (under self._lock)."""
        if ino >= len(self._opened):
            self._opened.extend(bytes(ino + 1 - len(self._opened)))
        seen, self._opened[ino] = self._opened[ino], 1
        return bool(seen)

    def _supply_at_open(self, ino: int, handle: int) -> None:
        # The opener holds a reference to the VMO, so it cannot go away meanwhile.
        # A file that never had rules (nearly all) has no FaultSet, and needs none to
        # be made for it: the check and the supply happen under _open_lock, which
        # _faultset takes once after making a file's first FaultSet, so a rule's
        # eviction of its pages always comes after a supply that found no rules.
        with self._open_lock:
            if ino not in self._faults:
                self.server.supply_chunk(self._open_aux, ino, handle, 0)
                return
        # The opener may be the trio thread, which must not wait on another thread: if
        # the file's rules are being changed, the first read will ask instead.
        faults = self._faults[ino]
        with faults.serving(wait=False) as admitted:
            # A rule must act on the request that really asks: leave its file alone.
            if admitted and not faults:
                with self._open_lock:
                    self.server.supply_chunk(self._open_aux, ino, handle, 0)

    def close(self, ino: int) -> None:
        """Let go of a reference. When the last one goes the file is closed here at once
        (an open after this makes a new VMO), but its VMO's handle is closed — which
        detaches it — with close_batch others. A detach queues the VMO's
        ZX_PAGER_VMO_COMPLETE packet, which wakes a pager thread; one wake-up per file
        cost the trio thread a fifth of its time in `tar` of a tree of small files (the
        woken thread takes the GIL from it), while a batch's packets are drained by the
        few threads the first ones wake. Nobody can read a closed file's VMO, so the
        delay changes nothing but when its pages are freed (they stay evictable by the
        page budget meanwhile)."""
        with self._lock:
            entry = self._vmos[ino]
            entry.refs -= 1
            if entry.refs:
                return
            del self._vmos[ino]
            self._closing.append(entry.handle)
            closing = len(self._closing) >= self.close_batch
        self.server.forget(ino)
        if closing:
            self.detach_closed()

    def detach_closed(self) -> None:
        """Close the VMO handles of closed files now."""
        with self._lock:
            handles, self._closing = self._closing, []
        for handle in handles:
            zx.zx_handle_close(handle)

    def _hold(self, ino: int) -> int | None:
        """Take a reference for a pager thread, if the file is still open."""
        with self._lock:
            entry = self._vmos.get(ino)
            if entry is None:
                return None
            entry.refs += 1
            return entry.handle

    # -- fault rules ----------------------------------------------------------------------

    def _faultset(self, ino: int) -> FaultSet:
        with self._lock:
            faults = self._faults.get(ino)
            if faults is not None:
                return faults
            faults = self._faults[ino] = FaultSet()
            # A thread that found the file without rules may be serving it right now
            # (see _serving); none starts now that the FaultSet is there, so this ends,
            # and what the caller evicts next stays out.
            while self._plain.get(ino):
                self._plain_done.wait()
        # An open that found the file without rules may be supplying it right now (see
        # _supply_at_open): let it finish, so that what the caller evicts next stays out.
        with self._open_lock:
            pass
        return faults

    def add_fault(self, ino: int, rule: FaultRule) -> int:
        """Arm a rule and evict its pages, so that the next access asks the pager."""
        faults = self._faultset(ino)
        with faults.changing():
            faults.add(rule)
            return self.drop_pages(ino, rule.first_page, rule.last_page)

    def clear_faults(self, ino: int) -> int:
        faults = self._faults.get(ino)
        if faults is None:
            return 0  # never had a rule: none to clear, and no FaultSet made for that
        with faults.changing():
            return sum(self.drop_pages(ino, rule.first_page, rule.last_page)
                       for rule in faults.clear())

    def remove_fault(self, ino: int, rule_id: int) -> bool:
        """Take one rule away (by the id fault_states gives); False if it is not there."""
        faults = self._faults.get(ino)
        if faults is None:
            return False
        with faults.changing():
            rule = faults.remove(rule_id)
            if rule is None:
                return False
            self.drop_pages(ino, rule.first_page, rule.last_page)
            return True

    def faults(self, ino: int) -> list[FaultRule]:
        faults = self._faults.get(ino)
        return faults.rules() if faults else []

    def fault_states(self, ino: int) -> list[RuleState]:
        """The file's rules with their ids and how many requests each one fired on."""
        faults = self._faults.get(ino)
        return faults.states() if faults else []

    def drop_pages(self, ino: int, first_page: int, last_page: int) -> int:
        """Evict pages from the file's VMO so that the next access asks the pager."""
        handle = self._hold(ino)
        if handle is None:
            return 0
        try:
            size = zx.zx_vmo_get_size(handle)
            offset = min(first_page * PAGE, size)
            end = min((last_page + 1) * PAGE, size)
            return zx.scanner_evict(handle, offset, end - offset) if end > offset else 0
        finally:
            self.close(ino)

    # -- observability --------------------------------------------------------------------

    def committed_pages(self, ino: int | None = None) -> int:
        with self._lock:
            handles = [e.handle for i, e in self._vmos.items() if ino in (None, i)]
        total = 0
        for handle in handles:
            try:
                total += zx.zx_object_get_info(handle, zx.ZX_INFO_VMO).committed_bytes
            except zx.ZxError:
                pass  # closed meanwhile: nothing committed any more
        return total // PAGE

    def open_files(self) -> int:
        with self._lock:
            return len(self._vmos)

    # -- serving in the reader's thread -----------------------------------------------

    def read(self, ino: int, vmo: int, offset: int, length: int, done) -> bytes | None:
        """vmo_read_async of the file's VMO (`done` as there), but a read that parks on a
        request it can serve itself has it served in the calling thread (serve_here)
        before this returns, and the packet it took back woke no pager thread.

        For a thread that must not wait for another (the trio thread): it only ever
        serves a request that needs no other thread.
        """
        if not self._may_serve_here(ino, offset, length):
            data = zx.vmo_read_async(vmo, offset, length, done)
            self._read_on(ino, offset, length)
            return data
        # A pager thread woken for the packet this read queues would find it gone and
        # only contend for the CPU and the GIL: 20-85 us of a warm miss in-process.
        with zx.port_hold_wakeups(self.port):
            data = zx.vmo_read_async(vmo, offset, length, done)
            if data is not None:
                self._read_on(ino, offset, length)
                return data
            # A miss, which this thread will serve: the disk starts on the chunk's
            # stored block now, while the Python up to the store's pread runs.
            self.image.prefetch(ino, offset // self.image.chunk_size)
            packet = self._take_packet()
        self._serve_taken(packet)
        return None

    def _read_on(self, ino: int, offset: int, length: int) -> None:
        """A read that continues a sequential stream moves its read-ahead on, whether
        or not it asked the pager for anything: a stream's reads mostly find their
        pages present or being supplied by read-ahead, and their requests end before a
        pager thread takes the packet, so without this the decoders would idle until
        a read misses again (half the time of a cold sequential read)."""
        first = offset // PAGE
        self.server.plan_ahead(ino, first, (offset + length - 1) // PAGE,
                               -(-self.image.stat(ino).size // PAGE), start_stream=False)

    def serve_here(self, ino: int, offset: int, length: int) -> None:
        """Serve a page request that is waiting on the port in the calling thread, if
        it is one that needs no other thread: one chunk at most, that read-ahead does
        not hold, of a file without fault rules (a random miss, mostly). Call it right
        after a read parked on a request (vmo_read_async gave None), from a thread that
        must not wait for another (the trio thread), with that read's range: a read
        that could not be served here takes no packet. read() does both.

        A random miss otherwise costs two thread hand-offs, the port's wake-up of a
        pager thread and the pager thread's wake-up of the reader, which on this
        machine cost about as much as the cold pread and lz4 of the chunk. Here the
        reader's thread takes the packet itself (zx_port_wait with a deadline already
        past: a pager thread woken for it finds the port empty and waits on), serves
        it through the same RequestServer, every byte through zx_pager_supply_pages,
        and its read is complete when this returns. Any other packet it took (a
        stream's, a file with rules: they may wait on read-ahead or sleep in a
        delay_ms rule) is handed to a pager thread.
        """
        if self._may_serve_here(ino, offset, length):
            self._serve_taken(self._take_packet())

    def _may_serve_here(self, ino: int, offset: int, length: int) -> bool:
        """Whether a read of (ino, offset, length) that parks raises a request that
        serve_here serves (it checks the packet it takes again)."""
        return not self._faults.get(ino) and self.server.serves_alone(ino, offset, length)

    def _take_packet(self):
        try:
            return zx.zx_port_wait(self.port, 0)
        except zx.ZxError:
            return None  # a pager thread has it already

    def _serve_taken(self, packet) -> None:
        """Serve a packet taken from the port here, or hand it to a pager thread; None
        (nothing was waiting) is nothing to do."""
        if packet is None:
            return
        try:
            served = self._served_here(packet)
        except Exception:  # the request must still be served: by a pager thread, then
            log.exception("serving a page request in the reader's thread")
            served = False
        if not served:
            self._handoff.append(packet)
            # A COMPLETE packet of a VMO of no file wakes a pager thread, which looks
            # at the hand-offs before anything else.
            zx.zx_handle_close(zx.zx_pager_create_vmo(self.pager, 0, self.port, _WAKE_KEY, PAGE))

    def _served_here(self, packet) -> bool:
        """Serve the packet if it is a random miss on a file without rules; False (and
        nothing done) otherwise."""
        request = packet.page_request
        if packet.type != zx.ZX_PKT_TYPE_PAGE_REQUEST or request.command != zx.ZX_PAGER_VMO_READ:
            return False
        ino = packet.key
        if not self._may_serve_here(ino, request.offset, request.length):
            return False
        with self._serving(ino, wait=False) as (handle, faults):
            if handle is None:
                # Closed (the detach ended the request), or rules are being changed.
                return faults is None
            if faults:
                return False  # armed since: a rule may sleep, and not in this thread
            with self._here_lock:
                self.server.serve(self._here_aux, ino, handle, request.offset,
                                  request.length, faults)
        return True

    # -- the pool ---------------------------------------------------------------------

    def _run(self) -> None:
        # Each thread has its own aux VMO, big enough for one chunk.
        aux = zx.zx_vmo_create(self.image.chunk_size, 0)
        try:
            while not self._stop.is_set():
                try:
                    # Untimed: stop() wakes every thread with a packet.
                    packet = zx.zx_port_wait(self.port, zx.ZX_TIME_INFINITE)
                except zx.ZxError as err:
                    if self._stop.is_set():
                        return
                    log.error("zx_port_wait failed: %s", err)
                    continue
                if self._stop.is_set():
                    return
                self._handle_handoffs(aux)
                self._handle_safely(aux, packet)
        finally:
            zx.zx_handle_close(aux)

    def _handle_safely(self, aux: int, packet) -> None:
        try:
            self._handle(aux, packet)
        except Exception:  # a pager thread must outlive any one request
            log.exception("pager thread: unexpected error")

    def _handle_handoffs(self, aux: int) -> None:
        while True:
            try:
                packet = self._handoff.popleft()
            except IndexError:
                return
            self._handle_safely(aux, packet)

    def _schedule_ahead(self, ino: int, indices: range) -> None:
        # Jobs of AHEAD_RUN chunks: each job pays one wake-up, one hold of the file and
        # of its rules' gate; each chunk is still supplied as soon as it is decoded, and
        # a chunk no thread has started yet may still be taken back by a request.
        jobs = [indices[k:k + AHEAD_RUN] for k in range(0, len(indices), AHEAD_RUN)]
        with self._idle:
            self._ahead_pending += len(jobs)
        for job in jobs:
            self._ahead.put((ino, job))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no thread is serving a file and no read-ahead is queued (for tests
        and diagnostics). A reader gets its bytes from inside the supply, so the pager
        thread may still hold the file for a moment after the read returned."""
        with self._idle:
            return self._idle.wait_for(
                lambda: not self._ahead_pending and not self._serving_now, timeout)

    def _run_ahead(self) -> None:
        aux = zx.zx_vmo_create(self.image.chunk_size, 0)
        try:
            while True:
                job = self._ahead.get()
                if job is None or self._stop.is_set():
                    return
                try:
                    self._read_ahead(aux, *job)
                except Exception:  # best effort: the real request will ask again
                    log.exception("read-ahead thread: unexpected error")
                finally:
                    with self._idle:
                        self._ahead_pending -= 1
                        self._idle.notify_all()
        finally:
            zx.zx_handle_close(aux)

    def _read_ahead(self, aux: int, ino: int, indices: range) -> None:
        with self._serving(ino) as (handle, faults):
            if handle is not None:
                self.server.serve_ahead(aux, ino, handle, indices, faults)

    def _handle(self, aux: int, packet) -> None:
        request = packet.page_request
        if packet.type != zx.ZX_PKT_TYPE_PAGE_REQUEST:
            return
        if request.command == zx.ZX_PAGER_VMO_COMPLETE:
            self.trace.event("complete", ino=packet.key)
            return
        if request.command != zx.ZX_PAGER_VMO_READ:
            log.error("unknown page request command %d", request.command)
            return
        with self._serving(packet.key) as (handle, faults):
            # None: closed, and the detach already ended the request.
            if handle is not None:
                self.server.serve(aux, packet.key, handle, request.offset, request.length,
                                  faults)

    @contextlib.contextmanager
    def _serving(self, ino: int, wait: bool = True):
        """(the file's VMO, its rules) while a thread serves it; the VMO is None if the
        file was closed meanwhile (or, with wait=False, while its rules are changing).
        Holds a reference to the VMO and the rules' gate shared: a rule armed after this
        sees its pages evicted, one armed before is seen by the serving.

        A file without rules (nearly all) is served without a FaultSet made for it (one
        per file served, kept for the mount's life, cost ~1.4 KB each: most of what
        serving a tree of small files left behind). The reference and the look for
        rules are one hold of _lock; such a serve is counted in _plain instead, which
        _faultset lets drain before a first rule's eviction, as the gate would."""
        with self._idle:
            self._serving_now += 1
        try:
            with self._lock:
                entry = self._vmos.get(ino)
                if entry is None:
                    handle = faults = None
                else:
                    entry.refs += 1
                    handle = entry.handle
                    faults = self._faults.get(ino)
                    if faults is None:
                        self._plain[ino] = self._plain.get(ino, 0) + 1
            if handle is None:
                yield None, None
                return
            try:
                if faults is None:
                    try:
                        yield handle, None
                    finally:
                        with self._lock:
                            left = self._plain.pop(ino) - 1
                            if left:
                                self._plain[ino] = left
                            else:
                                self._plain_done.notify_all()
                else:
                    with faults.serving(wait) as admitted:
                        yield (handle if admitted else None), faults
            finally:
                self.close(ino)
        finally:
            with self._idle:
                self._serving_now -= 1
                self._idle.notify_all()

    def hurry(self) -> None:
        """The mount is going away: cut every delay_ms rule's sleep short."""
        self.server.hurry.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the threads and close everything. With a timeout, a thread still busy
        (say, sleeping in a delay_ms rule) is left behind: it finds its handles closed
        and ends on its own; a daemon about to exit need not wait for it."""
        self._stop.set()
        self.hurry()
        # Closing a pager VMO queues its COMPLETE packet: one per thread wakes them all.
        for _ in self._threads:
            zx.zx_handle_close(zx.zx_pager_create_vmo(self.pager, 0, self.port, _WAKE_KEY, PAGE))
        for _ in range(AHEAD_THREADS):
            self._ahead.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        with self._lock:
            vmos, self._vmos = self._vmos, {}
        for entry in vmos.values():
            zx.zx_handle_close(entry.handle)
        self.detach_closed()
        zx.zx_handle_close(self.port)
        zx.zx_handle_close(self.pager)
        zx.zx_handle_close(self._open_aux)
        zx.zx_handle_close(self._here_aux)
        zx.scanner_set_limit(None)
        self.trace.close()
