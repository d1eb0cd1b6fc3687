"""The sparse-file probe (issue 9): a 1 TiB file that is all hole but for three 1 MiB
extents. A builder that reads, hashes and compresses every hole would take half an hour
on it; one that asks the file system where the data is (SEEK_DATA/SEEK_HOLE) takes
seconds. Only pagerfs is timed: mksquashfs reads every hole to find that it is zeros
(about 1 TiB through the page cache), which would take longer than the whole bench.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 1
SIZE = 2**40
EXTENT = 2**20
# At the start, in the middle and at the very end: the end one checks that the last
# page, whose extent ends at EOF, is stored and served whole.
OFFSETS = (0, SIZE // 2, SIZE - EXTENT)


@dataclass(frozen=True)
class SparseFile:
    src: Path  # the directory the image is built from
    rel: str  # the file inside it
    extents: tuple[tuple[int, str], ...]  # (offset, SHA-256 of its EXTENT bytes)


def prepare(cache: Path, seed: int) -> SparseFile:
    """The source directory, made once per seed (truncate + three pwrites)."""
    src = cache / f"sparse1T-seed{seed}-v{RECIPE_VERSION}" / "src"
    rel = "sparse.bin"
    rng = random.Random(seed)
    extents = []
    datas = []
    for off in OFFSETS:
        data = rng.randbytes(EXTENT)
        datas.append((off, data))
        extents.append((off, hashlib.sha256(data).hexdigest()))
    path = src / rel
    if not (path.exists() and path.stat().st_size == SIZE):
        src.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.truncate(SIZE)
            for off, data in datas:
                os.pwrite(f.fileno(), data, off)
        os.replace(tmp, path)
    return SparseFile(src, rel, tuple(extents))


def check_mounted(path: Path, sparse: SparseFile) -> str | None:
    """What is wrong with the file as the mount serves it, or None: its size, its
    st_blocks (the holes must not count) and the bytes of every extent and of a page of
    hole beside each."""
    st = os.stat(path)
    if st.st_size != SIZE:
        return f"size {st.st_size}, expected {SIZE}"
    if st.st_blocks * 512 > 64 * EXTENT:
        return f"st_blocks {st.st_blocks} counts the holes"
    with open(path, "rb") as f:
        for off, digest in sparse.extents:
            if hashlib.sha256(os.pread(f.fileno(), EXTENT, off)).hexdigest() != digest:
                return f"wrong bytes at offset {off}"
            hole = off + EXTENT if off + EXTENT < SIZE else off - 4096
            if os.pread(f.fileno(), 4096, hole) != bytes(4096):
                return f"the hole at offset {hole} is not zeros"
    return None
