"""Sparse page storage: a sorted run of extents, never one object per page.

An extent holds the pages [start, end) of a VMO and a read-only buffer with their bytes.
The buffer may be shorter than the pages it covers (a file's tail, or nothing at all for
zero pages): the missing bytes read as zeros. Buffers are immutable (`bytes` or views of
`bytes`), so a reader may keep a view after dropping the VMO lock and still copy the
right bytes even if the pages are evicted or rewritten meanwhile: rewriting replaces an
extent's buffer, it never changes one.

All page numbers are in units of PAGE_SIZE; byte positions are plain offsets.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable

from .constants import PAGE_SHIFT, PAGE_SIZE

_MASK = PAGE_SIZE - 1
_EMPTY = memoryview(b"")
_ZEROS = memoryview(bytes(1 << 20))


def add_zeros(out: list, n: int) -> None:
    """Append views of n zero bytes (of one shared zero buffer: no allocation)."""
    chunk = len(_ZEROS)
    while n > chunk:
        out.append(_ZEROS)
        n -= chunk
    out.append(_ZEROS[:n])


def as_view(data: object) -> memoryview:
    """An immutable byte view of a bytes-like object, copying only when the caller could
    change it later. Raises TypeError for anything without the buffer protocol."""
    if type(data) is bytes:
        return memoryview(data)
    view = memoryview(data)  # type: ignore[arg-type]
    if view.readonly and type(view.obj) is bytes and view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    # Anything the caller could change later, or a strided view, is copied once.
    return memoryview(view.tobytes())


class Extent:
    """Pages [start, end) and their bytes; `stamp` orders extents for LRU eviction."""

    __slots__ = ("start", "end", "buf", "stamp")

    def __init__(self, start: int, end: int, buf: memoryview, stamp: int = 0) -> None:
        self.start = start
        self.end = end
        self.buf = buf
        self.stamp = stamp

    def slice(self, a: int, b: int) -> "Extent":
        """The pages [a, b) of this extent (a view: no bytes are copied)."""
        base = self.start << PAGE_SHIFT
        lo = (a << PAGE_SHIFT) - base
        buf = self.buf
        if lo >= len(buf):
            view = _EMPTY
        else:
            view = buf[lo : (b << PAGE_SHIFT) - base]
        return Extent(a, b, view, self.stamp)

    def __repr__(self) -> str:
        return f"Extent({self.start}, {self.end}, {len(self.buf)} bytes)"


class PageStore:
    """The present pages of one VMO, as disjoint extents sorted by start page."""

    __slots__ = ("_starts", "_exts", "pages")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._exts: list[Extent] = []
        self.pages = 0  # present pages, kept up to date by every change

    # --- queries ------------------------------------------------------------------
    def _index(self, page: int) -> int:
        """Index of the first extent that ends after `page`."""
        i = bisect_right(self._starts, page) - 1
        if i >= 0 and self._exts[i].end > page:
            return i
        return i + 1

    def extents(self) -> list[Extent]:
        return list(self._exts)

    def is_present(self, page: int) -> bool:
        i = bisect_right(self._starts, page) - 1
        return i >= 0 and self._exts[i].end > page

    def first_absent(self, page: int, end: int) -> int:
        """The first absent page in [page, end), or end."""
        exts = self._exts
        i = self._index(page)
        n = len(exts)
        while page < end and i < n:
            ext = exts[i]
            if ext.start > page:
                return page
            page = ext.end
            i += 1
        return min(page, end) if page < end else end

    def next_present(self, page: int, end: int) -> int:
        """The first present page in [page, end), or end."""
        i = self._index(page)
        if i < len(self._exts):
            start = self._exts[i].start
            return min(max(start, page), end)
        return end

    def absent_runs(self, page: int, end: int) -> list[tuple[int, int]]:
        """The runs of absent pages in [page, end), in order."""
        runs = []
        exts = self._exts
        i = self._index(page)
        n = len(exts)
        while page < end:
            if i >= n:
                runs.append((page, end))
                break
            ext = exts[i]
            if ext.start > page:
                stop = min(ext.start, end)
                runs.append((page, stop))
            page = ext.end
            i += 1
        return runs

    def count_present(self, page: int, end: int) -> int:
        total = 0
        exts = self._exts
        i = self._index(page)
        n = len(exts)
        while i < n:
            ext = exts[i]
            if ext.start >= end:
                break
            total += min(ext.end, end) - max(ext.start, page)
            i += 1
        return total

    # --- reading ------------------------------------------------------------------
    def gather(self, pos: int, end: int, out: list, stamp: int) -> int:
        """Append views of the bytes from `pos` on, while pages are present.

        Returns where it stopped: `end`, or the start of the first absent page.
        """
        exts = self._exts
        i = self._index(pos >> PAGE_SHIFT)
        n = len(exts)
        while pos < end and i < n:
            ext = exts[i]
            base = ext.start << PAGE_SHIFT
            if base > pos:
                break
            stop = ext.end << PAGE_SHIFT
            if stop > end:
                stop = end
            lo = pos - base
            hi = stop - base
            buf = ext.buf
            blen = len(buf)
            if hi <= blen:
                out.append(buf[lo:hi])
            elif lo < blen:
                out.append(buf[lo:blen])
                add_zeros(out, hi - blen)
            else:
                add_zeros(out, hi - lo)
            ext.stamp = stamp
            pos = stop
            i += 1
        return pos

    def gather_filled(self, pos: int, end: int, out: list) -> None:
        """Append views of [pos, end), absent pages reading as zeros (plain VMOs)."""
        while pos < end:
            pos = self.gather(pos, end, out, 0)
            if pos >= end:
                return
            page = pos >> PAGE_SHIFT
            nxt = self.next_present(page, (end + _MASK) >> PAGE_SHIFT) << PAGE_SHIFT
            if nxt > end:
                nxt = end
            add_zeros(out, nxt - pos)
            pos = nxt

    def page_bytes(self, page: int) -> bytes:
        """One page's bytes (zeros where absent)."""
        out: list = []
        self.gather_filled(page << PAGE_SHIFT, (page + 1) << PAGE_SHIFT, out)
        return b"".join(out)

    # --- changing -----------------------------------------------------------------
    def remove(self, page: int, end: int, keep: Iterable[tuple[int, int]] = ()) -> int:
        """Drop the pages [page, end) except those inside the `keep` ranges.

        Returns the number of pages dropped.
        """
        dropped = 0
        a = page
        for k0, k1 in sorted(keep):
            if k1 <= a or k0 >= end:
                continue
            if k0 > a:
                dropped += self._remove(a, k0)
            a = max(a, k1)
        if a < end:
            dropped += self._remove(a, end)
        return dropped

    def _remove(self, page: int, end: int) -> int:
        exts = self._exts
        i = self._index(page)
        j = i
        n = len(exts)
        keep: list[Extent] = []
        dropped = 0
        while j < n and exts[j].start < end:
            ext = exts[j]
            if ext.start < page:
                keep.append(ext.slice(ext.start, page))
            if ext.end > end:
                keep.append(ext.slice(end, ext.end))
            dropped += min(ext.end, end) - max(ext.start, page)
            j += 1
        if j > i:
            self._exts[i:j] = keep
            self._starts[i:j] = [e.start for e in keep]
            self.pages -= dropped
        return dropped

    def take(self, page: int, end: int) -> list[Extent]:
        """Remove the pages [page, end) and return the extents that held them."""
        exts = self._exts
        i = self._index(page)
        n = len(exts)
        if i < n:
            ext = exts[i]
            if ext.start == page and ext.end == end:
                # The common case: the pager wrote the range as one run.
                del exts[i]
                del self._starts[i]
                self.pages -= end - page
                return [ext]
        taken = []
        j = i
        while j < n and exts[j].start < end:
            ext = exts[j]
            a = max(ext.start, page)
            b = min(ext.end, end)
            taken.append(ext if (a == ext.start and b == ext.end) else ext.slice(a, b))
            j += 1
        if taken:
            self._remove(page, end)
        return taken

    def _insert_run(self, new: list[Extent]) -> None:
        """Insert extents that fill one gap (sorted, disjoint, all absent pages)."""
        if not new:
            return
        i = bisect_right(self._starts, new[0].start)
        self._exts[i:i] = new
        self._starts[i:i] = [e.start for e in new]
        for e in new:
            self.pages += e.end - e.start

    def fill_absent(
        self, page: int, end: int, incoming: list[Extent], shift: int, stamp: int = 0
    ) -> int:
        """Make [page, end) present, filling only absent pages.

        `incoming` are sorted extents numbered `shift` pages below their place here
        (an aux VMO's pages); absent pages they do not cover become zero pages. Present
        pages are never overwritten. Returns the pages added.
        """
        nin = len(incoming)
        if nin == 1:
            src = incoming[0]
            if src.start + shift == page and src.end + shift == end:
                i = self._index(page)
                if i == len(self._exts) or self._exts[i].start >= end:
                    # The common case: one run moved into a wholly absent range.
                    self._exts.insert(i, Extent(page, end, src.buf, stamp))
                    self._starts.insert(i, page)
                    self.pages += end - page
                    return end - page
        added = 0
        k = 0
        for a, b in self.absent_runs(page, end):
            run: list[Extent] = []
            pos = a
            # Skip incoming extents that end before this gap.
            while k < nin and incoming[k].end + shift <= a:
                k += 1
            m = k
            while pos < b:
                if m < nin and incoming[m].start + shift < b:
                    src = incoming[m]
                    s0 = src.start + shift
                    s1 = src.end + shift
                    if s0 > pos:
                        run.append(Extent(pos, s0, _EMPTY, stamp))
                        pos = s0
                    hi = min(s1, b)
                    piece = src.slice(pos - shift, hi - shift)
                    run.append(Extent(pos, hi, piece.buf, stamp))
                    pos = hi
                    if s1 <= b:
                        m += 1
                    else:
                        break
                else:
                    run.append(Extent(pos, b, _EMPTY, stamp))
                    pos = b
            if pos < b:
                run.append(Extent(pos, b, _EMPTY, stamp))
            self._insert_run(run)
            added += b - a
        return added

    def write(self, pos: int, data: memoryview, stamp: int = 0) -> None:
        """Store `data` at byte `pos`, keeping a reference where whole pages allow."""
        n = len(data)
        if n == 0:
            return
        end = pos + n
        first = pos >> PAGE_SHIFT
        last = (end + _MASK) >> PAGE_SHIFT
        new: list[Extent] = []
        cur = pos
        if cur & _MASK:
            pg = cur >> PAGE_SHIFT
            stop = min(end, (pg + 1) << PAGE_SHIFT)
            new.append(Extent(pg, pg + 1, self._patched(pg, cur, data[: stop - pos]), stamp))
            cur = stop
        if cur < end:
            whole_end = end & ~_MASK
            if whole_end > cur:
                new.append(
                    Extent(cur >> PAGE_SHIFT, whole_end >> PAGE_SHIFT,
                           data[cur - pos : whole_end - pos], stamp)
                )
                cur = whole_end
            if cur < end:
                pg = cur >> PAGE_SHIFT
                tail = data[cur - pos :]
                if self.is_present(pg):
                    tail = self._patched(pg, cur, tail)
                new.append(Extent(pg, pg + 1, tail, stamp))
        self._remove(first, last)
        self._insert_run(new)

    def _patched(self, page: int, pos: int, piece: memoryview) -> memoryview:
        buf = bytearray(self.page_bytes(page))
        lo = pos - (page << PAGE_SHIFT)
        buf[lo : lo + len(piece)] = piece
        return memoryview(bytes(buf))

    def clear(self) -> int:
        dropped = self.pages
        self._starts.clear()
        self._exts.clear()
        self.pages = 0
        return dropped

    def holds(self, ext: Extent) -> bool:
        """Whether this very extent object is still part of the store."""
        i = bisect_right(self._starts, ext.start) - 1
        return i >= 0 and self._exts[i] is ext
