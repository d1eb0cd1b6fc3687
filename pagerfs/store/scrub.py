"""The scrub (`pagerfs verify`) and offline corruption (`pagerfs corrupt`).

Both work per stored block and translate a damaged block's bad pages into the pages
of every file that uses them: a block can hold chunks of several files (fragments,
identical chunks stored once), and corruption damages all of them. Each block is
checked with one hash call against its block digest (blocks are checked on `jobs`
threads, and hashlib releases the GIL during the call); only a block that fails it is
hashed page by page, to find its damaged pages: when it still decompresses, only the
pages whose hashes fail are damaged; when it does not, all of its pages are.
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


def _users(img: Image) -> dict[int, list[tuple[int, int, int]]]:
    """block -> [(ino, chunk index, chunk offset in the block)] for every file chunk."""
    users: dict[int, list[tuple[int, int, int]]] = {}
    for i, rec in enumerate(img._inodes):
        if rec[0] != fmt.KIND_FILE:
            continue
        first, count = rec[7], rec[8]
        for j in range(count):
            block, offset = img._chunkmap[first + j]
            users.setdefault(block, []).append((i + 1, j, offset))
    return users


BlockDamage = tuple[str, frozenset[int]]  # code, bad pages of the block


def damage_of(img: Image, bad: dict[int, BlockDamage],
              users: dict[int, list[tuple[int, int, int]]] | None = None) -> list[Damage]:
    """The damaged page ranges, per file, of the blocks in `bad`.

    A block's bad pages are translated into the file pages of every chunk stored in
    them: page-precise when the block decompressed and only some page hashes failed.
    """
    users = _users(img) if users is None else users
    hit: dict[int, dict[int, str]] = {}  # ino -> file page -> code
    for block, (code, pages) in bad.items():
        for ino, index, offset in users.get(block, ()):
            first, npages = img.chunk_pages(ino, index)
            at = offset // fmt.PAGE
            pages_of_file = hit.setdefault(ino, {})
            for bp in pages:
                if at <= bp < at + npages:
                    pages_of_file[first + bp - at] = code
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


def _check(img: Image, block: int) -> BlockDamage | None:
    found = img._check_block(block)
    if found is None:
        return None
    error, pages = found
    return (IntegrityError.code if error is IntegrityError else "IO"), pages


def scrub(img: Image, jobs: int = 2, start: Callable[[int], None] = lambda total: None,
          advance: Callable[[int], None] = lambda n: None) -> ScrubReport:
    """Check every stored block that a file uses (metadata was checked at open).

    start(total bytes to check) is called first, then advance(bytes) per block.
    """
    users = _users(img)
    # In image order, so that the scrub reads the image sequentially.
    order = sorted(users, key=lambda b: img._blocks[b][0])
    start(sum(img._blocks[b][2] for b in order))
    bad: dict[int, BlockDamage] = {}
    total = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for block, code in zip(order, pool.map(lambda b: _check(img, b), order)):
            length = img._blocks[block][2]
            total += length
            advance(length)
            if code:
                bad[block] = code
    return ScrubReport(damage_of(img, bad, users), len(order), total)


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
        size, first, count = img._file(ino)
        npages = -(-size // fmt.PAGE)
        if not 0 <= page < npages:
            raise ValueError(f"{show(img.path_of(ino))} has {npages} pages; no page {page}")
        index = page // (img.chunk_size // fmt.PAGE)
        block, chunk_offset = img._chunkmap[first + index]
        offset, stored, length, _, _ = img._blocks[block]
        target = chunk_offset // fmt.PAGE + page - img.chunk_pages(ino, index)[0]
        if stored == length:  # raw: the page's stored bytes are the page's bytes
            lo, hi = target * fmt.PAGE, min((target + 1) * fmt.PAGE, length)
        else:  # lz4: aim where the page's bytes roughly are first, then anywhere
            nblock = fmt.pages_of(length)
            lo, hi = stored * target // nblock, max(stored * (target + 1) // nblock, 1)
        fd = os.open(image_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for attempt in range(256):
                if attempt == 32 and stored != length:
                    lo, hi = 0, stored
                at = offset + lo + rng.randrange(max(hi - lo, 1))
                old = os.pread(fd, 1, at)
                os.pwrite(fd, bytes([old[0] ^ rng.randrange(1, 256)]), at)
                found = _check(img, block)
                if found and target in found[1]:
                    break
            else:
                raise FormatError(f"could not damage page {page}")
        finally:
            os.close(fd)
        return damage_of(img, {block: found})
