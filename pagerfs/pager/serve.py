"""Serving one READ page request, as blobfs does.

For the chunks that cover the request: read the chunk from the store (which decompresses
and verifies it), write the good pages into the thread's aux VMO and move them into the
file's VMO with zx_pager_supply_pages; then FAIL the pages that could not be served,
each with its own status. A request thus ends with every one of its pages either
supplied or failed (the kernel model fails the whole request once any page of it is
failed; the Linux client then asks again page by page, which is what makes failures
page-precise at the host).

Pages of a covering chunk that lie outside the request are supplied too (read-ahead to
chunk boundaries: the chunk had to be decompressed anyway), unless a fault rule could
still fire on them, so that a rule always acts on the request that really asks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

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


def _tamper_for(first_page: int, npages: int, pages: frozenset[int]):
    """A tamper hook that inverts the stored bytes lying where `pages` sit in the chunk.

    Stored bytes are compressed, so "where" is proportional; the point is only that the
    store's own verification, not the pager, decides that the chunk is bad.
    """
    lo, hi = min(pages) - first_page, max(pages) - first_page + 1

    def tamper(stored: bytes) -> bytes:
        n = len(stored)
        start = min(n * lo // npages, max(n - 1, 0))
        end = max(n * hi // npages, start + 1)
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
                if req.firing.delay_ms:
                    self.stats.add(ino, delays=1)
                    self.hurry.wait(req.firing.delay_ms / 1000)
            req.failed.update(req.firing.fail)
            self._serve_chunks(aux, req, faults)
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
        bad: dict[str, set[int]] = {}
        if corrupt:
            try:
                img.read_chunk(req.ino, index, tamper=_tamper_for(first, count, corrupt))
            except IntegrityError as err:
                caught = set(range(err.first_page, err.last_page + 1)) & chunk_pages
                # The store decided the chunk is bad; the rule says which of its pages
                # were "damaged", so only those are lost.
                bad["IO_DATA_INTEGRITY"] = (caught & corrupt) or caught
            except StoreIOError as err:
                bad["IO"] = set(range(err.first_page, err.last_page + 1)) & chunk_pages
            else:
                log.error("ino %d chunk %d: tampered bytes passed verification", req.ino, index)
                bad["BAD_STATE"] = set(corrupt)
            if not need_data:
                return None, bad
        try:
            data = img.read_chunk(req.ino, index)
        except IntegrityError as err:
            bad.setdefault("IO_DATA_INTEGRITY", set()).update(
                set(range(err.first_page, err.last_page + 1)) & chunk_pages or chunk_pages)
            return None, bad
        except StoreIOError as err:
            bad.setdefault("IO", set()).update(
                set(range(err.first_page, err.last_page + 1)) & chunk_pages or chunk_pages)
            return None, bad
        self.stats.add(req.ino, chunks_read=1, bytes_read_from_image=len(data))
        return data, bad

    def _supply(self, aux: int, req: Request, first: int, data: bytes, pages: list[int]) -> None:
        for run_first, run_count in page_runs(pages):
            start = (run_first - first) * PAGE
            piece = data[start:start + run_count * PAGE]
            try:
                # The aux range reads as zeros after each supply, so a short last page
                # needs no padding.
                zx.zx_vmo_write(aux, piece, start)
                zx.zx_pager_supply_pages(self.pager, req.vmo, run_first * PAGE,
                                         run_count * PAGE, aux, start)
            except zx.ZxError as err:
                if err.status in (zx.ZX_ERR_BAD_STATE, zx.ZX_ERR_BAD_HANDLE):
                    raise VmoGone() from err
                raise
            req.supplied.update(range(run_first, run_first + run_count))
            self.stats.add(req.ino, pages_supplied=run_count)
            self.trace.event("supply", ino=req.ino, offset=run_first * PAGE,
                             length=run_count * PAGE)

    def _fail_pages(self, req: Request) -> None:
        by_status: dict[str, list[int]] = {}
        for page, status in req.failed.items():
            by_status.setdefault(status, []).append(page)
        for status, pages in sorted(by_status.items()):
            for run_first, run_count in page_runs(pages):
                try:
                    zx.zx_pager_op_range(self.pager, zx.ZX_PAGER_OP_FAIL, req.vmo,
                                         run_first * PAGE, run_count * PAGE, STATUS[status])
                except zx.ZxError as err:
                    if err.status in (zx.ZX_ERR_BAD_STATE, zx.ZX_ERR_BAD_HANDLE):
                        return
                    log.error("ino %d: FAIL of pages %d+%d refused: %s", req.ino,
                              run_first, run_count, err)
                    continue
                self.stats.failed(req.ino, status, run_count)
                self.trace.event("fail", ino=req.ino, offset=run_first * PAGE,
                                 length=run_count * PAGE, status=status)
