"""The scrub (`pagerfs verify`) and offline corruption (`pagerfs corrupt`).

Both work per stored block and translate a damaged block into the pages of every
file that uses it: a block can hold chunks of several files (fragments, identical
chunks stored once), and corruption damages all of them.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from pagerfs.store import format as fmt
from pagerfs.store.errors import FormatError, IntegrityError, show
from pagerfs.store.reader import Image, _BlockFailure


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


def _users(img: Image) -> dict[int, list[tuple[int, int]]]:
    """block -> [(ino, chunk index)] for every file chunk stored in it."""
    users: dict[int, list[tuple[int, int]]] = {}
    for i, rec in enumerate(img._inodes):
        if rec[0] != fmt.KIND_FILE:
            continue
        first, count = rec[7], rec[8]
        for j in range(count):
            users.setdefault(img._chunkmap[first + j][0], []).append((i + 1, j))
    return users


def damage_of(img: Image, bad: dict[int, str], users: dict[int, list[tuple[int, int]]] | None = None
              ) -> list[Damage]:
    """The damaged page ranges, per file, of the blocks in `bad` (block -> code)."""
    users = _users(img) if users is None else users
    hit: dict[int, dict[int, str]] = {}
    for block, code in bad.items():
        for ino, index in users.get(block, ()):
            hit.setdefault(ino, {})[index] = code
    damage = []
    for ino in sorted(hit):
        path = img.path_of(ino)
        run_start = run_end = None
        run_code = ""
        for index in sorted(hit[ino]) + [None]:
            code = hit[ino].get(index) if index is not None else None
            if index is not None and run_end is not None and index == run_end + 1 and code == run_code:
                run_end = index
                continue
            if run_start is not None:
                first, _ = img.chunk_pages(ino, run_start)
                last_first, last_n = img.chunk_pages(ino, run_end)
                damage.append(Damage(ino, path, first, last_first + last_n - 1, run_code))
            run_start = run_end = index
            run_code = code or ""
    return damage


def _check(img: Image, block: int) -> str | None:
    try:
        img._load_block(block)
    except _BlockFailure as fail:
        return IntegrityError.code if fail.error is IntegrityError else "IO"
    return None


def scrub(img: Image, jobs: int = 2, start: Callable[[int], None] = lambda total: None,
          advance: Callable[[int], None] = lambda n: None) -> ScrubReport:
    """Check every stored block that a file uses (metadata was checked at open).

    start(total bytes to check) is called first, then advance(bytes) per block.
    """
    users = _users(img)
    # In image order, so that the scrub reads the image sequentially.
    order = sorted(users, key=lambda b: img._blocks[b][0])
    start(sum(img._blocks[b][2] for b in order))
    bad: dict[int, str] = {}
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

    Bytes are changed until the block really fails verification (a changed lz4 match
    offset inside a run of equal bytes can decompress to the same data), so the
    damage returned is what verify will find.
    """
    rng = random.Random(seed)
    with Image.open(image_path) as img:
        ino = img.resolve(path)
        size, first, count = img._file(ino)
        npages = -(-size // fmt.PAGE)
        if not 0 <= page < npages:
            raise ValueError(f"{show(img.path_of(ino))} has {npages} pages; no page {page}")
        index = page // (img.chunk_size // fmt.PAGE)
        block = img._chunkmap[first + index][0]
        offset, stored, _, _ = img._blocks[block]
        fd = os.open(image_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(64):
                at = offset + rng.randrange(stored)
                old = os.pread(fd, 1, at)
                os.pwrite(fd, bytes([old[0] ^ rng.randrange(1, 256)]), at)
                if _check(img, block):
                    break
            else:
                raise FormatError(f"could not damage the block of page {page}")
        finally:
            os.close(fd)
        return damage_of(img, {block: _check(img, block)})
