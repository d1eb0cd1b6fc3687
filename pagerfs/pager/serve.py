"""Serving one READ page request, as blobfs does.

For the chunks that cover the request: read the chunk from the store (which decompresses
and verifies it), write the good pages into the thread's aux VMO and move them into the
file's VMO with zx_pager_supply_pages; then FAIL the pages that could not be served,
each with its own status. A request thus ends with every one of its pages either
supplied or failed (the kernel model fails the whole request once any page of it is
failed; the Linux client then asks again page by page, which is what makes failures
page-precise at the host).

Pages of a covering chunk outside the request are supplied too (the chunk had to be
decompressed anyway), unless a fault rule could still fire on them, so that a rule
always acts on the request that really asks. One exception: on a file without rules a
request that starts no stream gets, and verifies, only its own pages (a random 4 KiB
read need not hash 128 KiB).

Sequential read-ahead, as blobfs does: a request that continues a stream on a file
(it starts where the last one or its read-ahead left off, or at page 0) also plans the
next READ_AHEAD bytes of chunks; they are handed to a read-ahead thread, so that
decompressing and verifying chunk k+1 runs on another core while the reader copies
chunk k, and later reads find their pages present without a packet round trip.
Read-ahead is best effort: it skips chunks on which a fault rule could still fire and
chunks the store cannot give, and never fails a page — a real request will ask for
them again and get the real answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Iterable

from pagerfs import zircon as zx
from pagerfs.pager.faults import Firing, FaultSet, NO_FIRING, page_runs
from pagerfs.pager.stats import Stats
from pagerfs.pager.trace import Trace
from pagerfs.store import IntegrityError, StoreIOError

log = logging.getLogger("pagerfs.pager")

PAGE = zx.PAGE_SIZE

# Status names as fault rules and stats spell them -> zx_status_t.
STATUS = {
    "IO": zx.ZX_ERR_IO,
    "IO_DATA_INTEGRITY": zx.ZX_ERR_IO_DATA_INTEGRITY,
    "BAD_STATE": zx.ZX_ERR_BAD_STATE,
}

def _store_status(err: IntegrityError | StoreIOError) -> str:
    """The status a store error fails its pages with, as blobfs maps them."""
    return "IO_DATA_INTEGRITY" if isinstance(err, IntegrityError) else "IO"


DEFAULT_READ_AHEAD = 2 * 2**20  # bytes past a sequential request, whole chunks


@dataclasses.dataclass
class _Stream:
    """Where the last request on a file began and how far read-ahead has been planned."""

    first_page: int
    ahead_end: int  # page, exclusive

    def continued_by(self, page: int) -> bool:
        """Whether a request starting at `page` carries the stream on."""
        return self.first_page <= page <= self.ahead_end

    def passed(self, first: int, last: int) -> bool:
        """Whether pages [first, last] lie behind where the stream's last request or
        READ began, within what was planned: a request of the stream served late (a
        READ's request that read-ahead completed after a pager thread had taken its
        packet, or a READ overtaken by a later one), not a new stream."""
        return first < self.first_page and last < self.ahead_end


class _Claim:
    """A chunk handed to read-ahead. A request that needs it before read-ahead starts on
    it takes it back; one that needs it while read-ahead is reading it waits for the
    bytes instead of decompressing and verifying the chunk a second time."""

    __slots__ = ("started", "done", "data")

    def __init__(self) -> None:
        self.started = False
        self.done = _Done()
        self.data: bytes | None = None


class _Done:
    """A one-shot event: set once, waited for by any number of threads. One lock,
    not threading.Event's condition and two locks: one is made for every chunk of
    read-ahead."""

    __slots__ = ("_lock", "_unset")

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._lock.acquire()
        self._unset = [True]  # emptied by the one set() that releases the lock

    def set(self) -> None:
        try:
            self._unset.pop()  # atomic: of two threads setting it, one gets here
        except IndexError:
            return
        self._lock.release()

    def is_set(self) -> bool:
        return not self._unset

    def wait(self) -> None:
        if self._unset:
            with self._lock:  # released by set(); let the next waiter through too
                pass


@dataclasses.dataclass
class Request:
    """One page request being served, and what has become of its pages."""

    ino: int
    vmo: int
    first_page: int
    last_page: int  # inclusive
    file_pages: int
    firing: Firing = NO_FIRING
    supplied: set[int] = dataclasses.field(default_factory=set)
    failed: dict[int, str] = dataclasses.field(default_factory=dict)

    def in_request(self, page: int) -> bool:
        return self.first_page <= page <= self.last_page

    def fail(self, pages, status: str) -> None:
        for page in pages:
            if self.in_request(page) and page not in self.supplied:
                self.failed.setdefault(page, status)


class VmoGone(Exception):
    """The file's VMO was closed (detached) while its request was being served."""


def _tamper_for(first_page: int, pages: frozenset[int], span: tuple[int, int, int]):
    """A tamper hook that inverts the stored bytes lying where `pages` sit in the chunk's
    block: `span` is (offset, length) of the chunk in the block's uncompressed bytes
    and the block's length (Image.block_span; a tail shares a fragment with others).

    Stored bytes are compressed, so "where" is proportional; the point is only that the
    store's own verification, not the pager, decides that the chunk is bad.
    """
    offset, length, block = span
    lo = offset + (min(pages) - first_page) * PAGE
    hi = offset + min((max(pages) - first_page + 1) * PAGE, length)

    def tamper(stored: bytes) -> bytes:
        n = len(stored)
        start = min(n * lo // block, max(n - 1, 0))
        end = max(n * hi // block, start + 1)
        return stored[:start] + bytes(b ^ 0xFF for b in stored[start:end]) + stored[end:]

    return tamper


class RequestServer:
    """Serves page requests for one image; shared by all pager threads."""

    def __init__(self, image, pager: int, stats: Stats, trace: Trace):
        self.image = image
        self.pager = pager
        self.stats = stats
        self.trace = trace
        # Set when the mount is going away: delay_ms rules stop delaying, so that no
        # reader (and no unmount) waits out a slow-pager rule.
        self.hurry = threading.Event()
        self.read_ahead = DEFAULT_READ_AHEAD
        # Set by the owner: takes (ino, chunk indices) to read ahead on another thread.
        self.schedule: Callable[[int, range], None] | None = None
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._claims: dict[tuple[int, int], _Claim] = {}

    def serve(self, aux: int, ino: int, vmo: int, offset: int, length: int,
              faults: FaultSet | None) -> None:
        size = self.image.stat(ino).size
        req = Request(ino, vmo, offset // PAGE, (offset + length) // PAGE - 1,
                      (size + PAGE - 1) // PAGE)
        self.stats.add(ino, page_requests=1, pages_requested=req.last_page - req.first_page + 1)
        if self.trace.enabled:
            self.trace.event("packet", ino=ino, offset=offset, length=length,
                             path=os.fsdecode(self.image.path_of(ino)))
        try:
            if faults:
                req.firing = faults.fire(req.first_page, req.last_page)
                if req.firing.rules_fired:
                    self.stats.add(ino, rule_firings=req.firing.rules_fired)
                if req.firing.delay_ms:
                    self.stats.add(ino, delays=1)
                    self.hurry.wait(req.firing.delay_ms / 1000)
            req.failed.update(req.firing.fail)
            if not faults and not req.failed and not req.firing.corrupt:
                self._serve_plain(aux, req)
            else:
                self._serve_chunks(aux, req, faults)
            if not req.failed:
                self._plan_ahead(req)
                return
        except VmoGone:
            return
        except Exception:
            log.exception("unexpected error serving ino %d pages %d-%d", ino,
                          req.first_page, req.last_page)
        # Whatever is neither supplied nor failed by now went wrong in a way nobody
        # named; the waiting reader must still be answered.
        leftover = [p for p in range(req.first_page, req.last_page + 1)
                    if p not in req.supplied and p not in req.failed]
        if leftover:
            log.error("ino %d: %d pages of a request were not served; failing them",
                      ino, len(leftover))
            req.fail(leftover, "BAD_STATE")
        self._fail_pages(req)

    def _serve_plain(self, aux: int, req: Request) -> None:
        """The common case, no fault rule on the file: page ranges, not page sets.

        A request that continues a sequential stream gets whole chunks (the rest of a
        chunk is read-ahead: it had to be decompressed anyway, and verifying a whole
        chunk is one hash). Any other request gets its own pages only, and only they
        are verified (a random 4 KiB read need not hash 128 KiB). Pages the store
        cannot give are noted in req.failed; the rest of their chunk is still supplied.
        """
        img = self.image
        whole = self._continues_stream(req)
        for index in img.chunk_range(req.ino, req.first_page,
                                     req.last_page - req.first_page + 1):
            first, count = img.chunk_pages(req.ino, index)
            lo, hi = max(first, req.first_page), min(first + count, req.last_page + 1)
            if whole or self._claimed(req.ino, index):
                lo, hi = first, first + count
            data, bad, fresh = self._load(req.ino, index, first, count, lo, hi)
            if not bad:
                self._supply_run(aux, req.ino, req.vmo, first, data, lo, hi - lo, count=fresh)
                req.supplied.update(range(max(lo, req.first_page), min(hi, req.last_page + 1)))
                continue
            for status, pages in bad.items():
                req.fail(pages, status)
            if data is not None:
                lost = set().union(*bad.values())
                self._supply(aux, req, first, data,
                             [p for p in range(lo, hi) if p not in lost], count=fresh)

    def serves_alone(self, ino: int, offset: int, length: int) -> bool:
        """Whether serving the request needs no other thread (on a file without rules):
        it lies in one chunk, which read-ahead does not hold (a request for a chunk
        read-ahead is reading waits for it)."""
        first = offset // PAGE
        chunks = self.image.chunk_range(ino, first, (offset + length) // PAGE - first)
        if len(chunks) != 1:
            return False
        with self._streams_lock:
            return (ino, chunks.start) not in self._claims

    def _claimed(self, ino: int, index: int) -> bool:
        """Whether read-ahead has the chunk (then _chunk shares its work)."""
        with self._streams_lock:
            return (ino, index) in self._claims

    def _continues_stream(self, req: Request) -> bool:
        """Whether the request starts where the file's last one or its read-ahead left
        off (or at the start of the file)."""
        if req.first_page == 0:
            return True
        with self._streams_lock:
            st = self._streams.get(req.ino)
            return st is not None and (st.continued_by(req.first_page)
                                       or st.passed(req.first_page, req.last_page))

    def _plan_ahead(self, req: Request) -> None:
        """If the request continues a sequential stream, hand the next chunks to the
        read-ahead thread."""
        self.plan_ahead(req.ino, req.first_page, req.last_page, req.file_pages)

    def plan_ahead(self, ino: int, first_page: int, last_page: int, file_pages: int,
                   start_stream: bool = True) -> None:
        """If pages [first_page, last_page] continue a sequential stream on the file,
        hand the next chunks to the read-ahead threads. Called for each request served,
        and by the user pager for each read (start_stream=False: a read that continues
        no stream does not start one; only requests do), so that read-ahead keeps going
        while the reads find their pages present or read-ahead supplies them (their
        requests then end before a pager thread takes the packet, and nobody else
        would plan the next chunks: the decoders would idle until a read misses)."""
        if self.schedule is None or self.read_ahead <= 0:
            return
        img = self.image
        ppc = img.chunk_size // PAGE
        end = -(-(last_page + 1) // ppc) * ppc  # the chunk boundary served up to
        with self._streams_lock:
            st = self._streams.get(ino)
            if st is not None and st.passed(first_page, last_page):
                # Taken for a new stream, it would set read-ahead back to chunks
                # read already, and they would be read again.
                return
            if st is not None and st.continued_by(first_page):
                start = max(end, st.ahead_end)
            elif first_page == 0:
                start = end
            else:
                if start_stream:
                    self._streams[ino] = _Stream(first_page, end)
                return
            # Done claims are kept a window behind the stream's front: a request of
            # the stream served late (passed) then re-supplies the chunk from its
            # claim instead of reading it again.
            behind = first_page // ppc - max(self.read_ahead // img.chunk_size, 1)
            for key in [k for k, c in self._claims.items()
                        if k[0] == ino and k[1] < behind and c.done.is_set()]:
                del self._claims[key]
            stop = min(end + max(self.read_ahead // PAGE, ppc), file_pages)
            self._streams[ino] = _Stream(first_page, max(stop, start))
            if stop <= start:
                return
            indices = img.chunk_range(ino, start, stop - start)
            for index in indices:
                self._claims.setdefault((ino, index), _Claim())
        self.schedule(ino, indices)

    def _load(self, ino: int, index: int, first: int, count: int, lo: int, hi: int,
              ) -> tuple[bytes | None, dict[str, set[int]], bool]:
        """Chunk `index` (file pages [first, first + count)) with its pages [lo, hi)
        verified: (bytes or None, {status: bad pages}, whether read for this request).
        A whole chunk is shared with read-ahead."""
        try:
            if (lo, hi) == (first, first + count):
                data, bad, fresh = self._chunk(ino, index, first, count)
            else:
                pages = self.image.read_chunk_pages(ino, index, lo, hi - lo)
                data, bad, fresh = pages.data, pages.bad, True
        except (IntegrityError, StoreIOError) as err:
            return None, {_store_status(err): set(err.pages)}, False
        if fresh:
            self.stats.add(ino, chunks_read=1, bytes_read_from_image=len(data))
        return data, ({"IO_DATA_INTEGRITY": set(bad)} if bad else {}), fresh

    def _chunk(self, ino: int, index: int, first: int, count: int,
               ) -> tuple[bytes, frozenset[int], bool]:
        """The bytes of a whole chunk and its bad pages, shared with read-ahead, and
        whether they were read for this request (False: read-ahead read and supplied
        them already; supplying them again only fills pages evicted since)."""
        key = (ino, index)
        with self._streams_lock:
            claim = self._claims.get(key)
            if claim is not None and not claim.started:
                del self._claims[key]  # ours now; read-ahead will skip it
                claim = None
            # A done claim stays for other requests of the chunk (see plan_ahead).
        if claim is not None:
            claim.done.wait()
            if claim.data is not None:
                return claim.data, frozenset(), False
        pages = self.image.read_chunk_pages(ino, index, first, count)
        return pages.data, pages.bad, True

    def forget(self, ino: int) -> None:
        """The file's VMO is gone: its stream starts afresh next time."""
        with self._streams_lock:
            self._streams.pop(ino, None)
            for key in [k for k in self._claims if k[0] == ino]:
                claim = self._claims.pop(key)
                claim.started = True  # nobody reads it now; waiters read for themselves
                claim.done.set()

    def serve_ahead(self, aux: int, ino: int, vmo: int, indices: Iterable[int],
                    faults: FaultSet | None) -> None:
        """Supply whole chunks nobody has asked for yet; best effort, never fails a page."""
        img = self.image
        for index in indices:
            key = (ino, index)
            with self._streams_lock:
                claim = self._claims.get(key)
                if claim is None or claim.started:
                    continue  # a request took it back (or it was forgotten)
                claim.started = True
            try:
                if self.hurry.is_set():
                    continue
                first, count = img.chunk_pages(ino, index)
                if faults and faults.guarded(first, first + count - 1):
                    continue  # a rule must act on the request that really asks
                data = self._read_unasked(ino, index)
                if data is None:
                    continue
                claim.data = data
                try:
                    self._supply_run(aux, ino, vmo, first, data, first, count)
                except VmoGone:
                    return
            finally:
                # A done claim stays (with its bytes) until the stream is a window
                # past it (plan_ahead): a request raised just before the supply landed
                # then need not read the chunk again.
                with self._streams_lock:
                    if claim.data is None and self._claims.get(key) is claim:
                        del self._claims[key]
                claim.done.set()

    def supply_chunk(self, aux: int, ino: int, vmo: int, index: int) -> None:
        """Supply a whole chunk nobody has asked for (a small file being opened); best
        effort, as read-ahead."""
        data = self._read_unasked(ino, index)
        if data is None:
            return
        first, count = self.image.chunk_pages(ino, index)
        try:
            self._supply_run(aux, ino, vmo, first, data, first, count)
        except VmoGone:
            pass

    def _read_unasked(self, ino: int, index: int) -> bytes | None:
        """A whole chunk, verified, for a supply nobody asked for; None if damaged: the
        real request will meet the damage and fail its pages."""
        try:
            data = self.image.read_chunk(ino, index)
        except (IntegrityError, StoreIOError):
            return None
        self.stats.add(ino, chunks_read=1, bytes_read_from_image=len(data))
        return data

    def _serve_chunks(self, aux: int, req: Request, faults: FaultSet | None) -> None:
        img = self.image
        npages = req.last_page - req.first_page + 1
        for index in img.chunk_range(req.ino, req.first_page, npages):
            first, count = img.chunk_pages(req.ino, index)
            last = first + count - 1
            wanted = [p for p in range(first, last + 1)
                      if p not in req.failed and p < req.file_pages]
            ahead = [p for p in wanted if not req.in_request(p)]
            if ahead and faults and faults.guarded(first, last):
                guarded = {p for p in ahead if faults.guarded(p, p)}
                wanted = [p for p in wanted if p not in guarded]
            if not wanted:
                continue
            corrupt = req.firing.corrupt & frozenset(range(first, last + 1))
            data, bad = self._read_chunk(req, index, first, count, corrupt,
                                         need_data=bool(set(wanted) - corrupt))
            for status, pages in bad.items():
                req.fail(pages, status)
            lost = set().union(*bad.values())
            good = [p for p in wanted if p not in req.failed and p not in lost]
            if data is not None:
                self._supply(aux, req, first, data, good)

    def _read_chunk(self, req: Request, index: int, first: int, count: int,
                    corrupt: frozenset[int], need_data: bool = True,
                    ) -> tuple[bytes | None, dict[str, set[int]]]:
        """Read one chunk; returns (data or None, {status: bad pages}).

        With pages to corrupt, the chunk is first read through the store's tamper hook,
        so that the store's own verification, not the pager, finds the damage. The rule
        damaged only its own pages, so the chunk's other pages are then read clean.
        """
        img = self.image
        chunk_pages = set(range(first, first + count))

        def named(err) -> set[int]:
            return set(err.pages) & chunk_pages

        bad: dict[str, set[int]] = {}
        if corrupt:
            try:
                img.read_chunk(req.ino, index,
                               tamper=_tamper_for(first, corrupt, img.block_span(req.ino, index)))
            except IntegrityError as err:
                # The store decided the chunk is bad; the rule says which of its pages
                # were "damaged", so only those are lost. (Damage aimed into an lz4
                # block lands only roughly where the pages are, maybe in other pages
                # of a tail's fragment: the rule's pages are lost even then.)
                bad["IO_DATA_INTEGRITY"] = (named(err) & corrupt) or set(corrupt)
            except StoreIOError as err:
                bad["IO"] = named(err)
            else:
                log.error("ino %d chunk %d: tampered bytes passed verification", req.ino, index)
                bad["BAD_STATE"] = set(corrupt)
            if not need_data:
                return None, bad
        data, more, _fresh = self._load(req.ino, index, first, count, first, first + count)
        for status, pages in more.items():
            bad.setdefault(status, set()).update(pages)
        return data, bad

    def _supply(self, aux: int, req: Request, first: int, data: bytes, pages: list[int],
                count: bool = True) -> None:
        for run_first, run_count in page_runs(pages):
            self._supply_run(aux, req.ino, req.vmo, first, data, run_first, run_count,
                             count=count)
            req.supplied.update(range(run_first, run_first + run_count))

    def _supply_run(self, aux: int, ino: int, vmo: int, first: int, data: bytes,
                    run_first: int, run_count: int, count: bool = True) -> None:
        """Supply pages [run_first, +run_count) of the chunk starting at page `first`."""
        start = (run_first - first) * PAGE
        # A view, not a slice: the kernel model keeps a reference to the chunk's bytes,
        # so a whole chunk is copied only once, by the read that finally takes it.
        piece = memoryview(data)[start:start + run_count * PAGE]
        if len(piece) * 2 < len(data):
            # A few pages of a big chunk (a random read): copy them, or the VMO would
            # keep the whole chunk alive for them, outside what the page budget counts.
            piece = memoryview(bytes(piece))
        # Counted and traced first: the supply hands the bytes to a waiting reader,
        # who may look at the stats before this thread runs another line.
        if count:
            self.stats.add(ino, pages_supplied=run_count)
        if self.trace.enabled:
            self.trace.event("supply", ino=ino, offset=run_first * PAGE,
                             length=run_count * PAGE)
        try:
            # The aux range reads as zeros after each supply, so a short last page
            # needs no padding, and a hole nothing at all: its zero pages are supplied
            # from aux pages never written.
            if not self.image.is_hole(ino, first * PAGE // self.image.chunk_size):
                zx.zx_vmo_write(aux, piece, start)
            zx.zx_pager_supply_pages(self.pager, vmo, run_first * PAGE,
                                     run_count * PAGE, aux, start)
        except zx.ZxError as err:
            if count:
                self.stats.add(ino, pages_supplied=-run_count)
            if err.status in (zx.ZX_ERR_BAD_STATE, zx.ZX_ERR_BAD_HANDLE):
                raise VmoGone() from err
            raise

    def _fail_pages(self, req: Request) -> None:
        by_status: dict[str, list[int]] = {}
        for page, status in req.failed.items():
            by_status.setdefault(status, []).append(page)
        for status, pages in sorted(by_status.items()):
            for run_first, run_count in page_runs(pages):
                # Counted and traced first, as for supplies: the FAIL wakes the reader.
                self.stats.failed(req.ino, status, run_count)
                self.trace.event("fail", ino=req.ino, offset=run_first * PAGE,
                                 length=run_count * PAGE, status=status)
                try:
                    zx.zx_pager_op_range(self.pager, zx.ZX_PAGER_OP_FAIL, req.vmo,
                                         run_first * PAGE, run_count * PAGE, STATUS[status])
                except zx.ZxError as err:
                    self.stats.failed(req.ino, status, -run_count)
                    if err.status in (zx.ZX_ERR_BAD_STATE, zx.ZX_ERR_BAD_HANDLE):
                        return
                    log.error("ino %d: FAIL of pages %d+%d refused: %s", req.ino,
                              run_first, run_count, err)
