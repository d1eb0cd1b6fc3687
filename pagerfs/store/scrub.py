"""The scrub (`pagerfs verify`) and offline corruption (`pagerfs corrupt`).

Both work per stored block and name the damaged pages of every file that uses it: a
block can hold chunks of several files (fragments, identical chunks stored once), and
corruption damages all of them. Each block is checked page by page against its page
hashes, in one codec call (blocks are checked on `jobs` threads; the codec holds no
GIL): when it still decompresses, the damaged file pages are those that lie in a
failed page of the block; when it does not, every page of every chunk in it is.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from pagerfs.store import format as fmt
from pagerfs.store.errors import FormatError, IntegrityError, show
from pagerfs.store.reader import Image


@dataclass(frozen=True, slots=True)
class Damage:
    """Pages first_page..last_page (inclusive) of the file at `path` cannot be read."""

    ino: int
    path: bytes
    first_page: int
    last_page: int
    code: str  # "IO_DATA_INTEGRITY" or "IO"

    def line(self) -> bytes:
        return b"%s: pages %d-%d: %s" % (self.path, self.first_page, self.last_page,
                                          self.code.encode())


@dataclass(frozen=True, slots=True)
class ScrubReport:
    damage: list[Damage]
    blocks_checked: int
    bytes_checked: int  # uncompressed


Chunk = tuple[int, int]  # (ino, chunk index)
Found = tuple[int, type, frozenset[int]]  # (ino, error, bad file pages)


def _users(img: Image) -> dict[int, list[Chunk]]:
    """block -> [(ino, chunk index)] for every stored file chunk (holes store nothing)."""
    users: dict[int, list[Chunk]] = {}
    esize = fmt.CHUNKMAP.size
    for i, rec in enumerate(img._inodes):
        if rec[0] != fmt.KIND_FILE:
            continue
        first, count = rec[7], rec[8]
        j = 0
        while j < count:
            block = fmt.CHUNKMAP.unpack_from(img._chunkmap, (first + j) * esize)[0]
            if block == fmt.HOLE:
                j += img._hole_run(first + j, count - j)
                continue
            users.setdefault(block, []).append((i + 1, j))
            j += 1
    return users


def damage_of(img: Image, found: list[Found]) -> list[Damage]:
    """The damaged page ranges, per file, one Damage per run of pages with one code."""
    hit: dict[int, dict[int, str]] = {}  # ino -> file page -> code
    for ino, error, pages in found:
        code = IntegrityError.code if error is IntegrityError else "IO"
        of_file = hit.setdefault(ino, {})
        for page in pages:
            of_file[page] = code
    damage = []
    for ino in sorted(hit):
        if not hit[ino]:
            continue
        path = img.path_of(ino)
        pages = sorted(hit[ino])
        run_start = prev = pages[0]
        for page in pages[1:] + [None]:
            if page is not None and page == prev + 1 and hit[ino][page] == hit[ino][prev]:
                prev = page
                continue
            damage.append(Damage(ino, path, run_start, prev, hit[ino][prev]))
            if page is not None:
                run_start = prev = page
    return damage


def scrub(img: Image, jobs: int = 2, start: Callable[[int], None] = lambda total: None,
          advance: Callable[[int], None] = lambda n: None) -> ScrubReport:
    """Check every stored block that a file uses (metadata was checked at open).

    start(total bytes to check) is called first, then advance(bytes) per block.
    """
    users = _users(img)
    # In image order, so that the scrub reads the image sequentially.
    order = sorted(users, key=lambda b: img._blocks[b][0])
    start(sum(img._blocks[b][2] for b in order))
    found: list[Found] = []
    total = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for block, hits in zip(order, pool.map(lambda b: img._check_block(b, users[b]), order)):
            length = img._blocks[block][2]
            total += length
            advance(length)
            found += hits
    return ScrubReport(damage_of(img, found), len(order), total)


def corrupt(image_path: str | bytes, path: str | bytes, page: int, seed: int = 0) -> list[Damage]:
    """Change stored bytes of the block holding `page` of `path`; returns the damage.

    Bytes are changed until `page` really fails verification (a changed lz4 match
    offset inside a run of equal bytes can decompress to the same data; a changed
    literal can damage other pages only), so the damage returned is what verify will
    find. In a block stored raw only bytes of that page are changed, so only it fails;
    in an lz4 block the damage may spread to later pages, or to the whole block when
    it no longer decodes.
    """
    rng = random.Random(seed)
    with Image.open(image_path) as img:
        ino = img.resolve(path)
        size, _, _ = img._file(ino)
        npages = -(-size // fmt.PAGE)
        if not 0 <= page < npages:
            raise ValueError(f"{show(img.path_of(ino))} has {npages} pages; no page {page}")
        index = page // (img.chunk_size // fmt.PAGE)
        block, chunk_offset, _, _ = img._chunk_entry(ino, index)
        if block == fmt.HOLE:
            raise ValueError(f"page {page} is in a hole: nothing is stored for it")
        offset, stored, length = img._blocks[block]
        # The page's bytes in the block (tails sit anywhere in their fragment).
        start = chunk_offset + (page - img.chunk_pages(ino, index)[0]) * fmt.PAGE
        end = min(start + fmt.PAGE, chunk_offset + img._chunk_entry(ino, index)[3])
        if stored == length:  # raw: the page's stored bytes are the page's bytes
            lo, hi = start, end
        else:  # lz4: aim where the page's bytes roughly are first, then anywhere
            lo, hi = stored * start // length, max(stored * end // length, stored * start // length + 1)
        chunks = _users(img)[block]
        fd = os.open(image_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for attempt in range(256):
                if attempt == 32 and stored != length:
                    lo, hi = 0, stored
                at = offset + lo + rng.randrange(max(hi - lo, 1))
                old = os.pread(fd, 1, at)
                os.pwrite(fd, bytes([old[0] ^ rng.randrange(1, 256)]), at)
                found = img._check_block(block, chunks)
                if any(i == ino and page in pages for i, _, pages in found):
                    break
            else:
                raise FormatError(f"could not damage page {page}")
        finally:
            os.close(fd)
        return damage_of(img, found)
