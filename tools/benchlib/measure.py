"""The timed probes. Each one does only the work it names between its two clock reads."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

READ_CHUNK = 1 << 20
PAGE = 4096


def drop_caches() -> None:
    """Writes back dirty pages, then drops the page cache, dentries and inodes, so the
    next read goes to the file system (and, under it, to the image on disk)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def drop_count() -> int:
    """How many times anyone has dropped the page cache since boot (/proc/vmstat). Other
    programs on a shared machine (test suites) drop it too; a warm figure is only
    warm if this did not move while it was measured."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("drop_pagecache "):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def sequential_read(path: Path) -> tuple[int, float]:
    """Reads the whole file front to back in 1 MiB reads; returns (bytes, seconds)."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                break
            total += n
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return total, elapsed


def random_offsets(size: int, count: int, seed: int) -> list[int]:
    """`count` distinct page-aligned offsets inside the file, the same for every file
    system and every round."""
    pages = size // PAGE
    if pages == 0:
        raise ValueError("file smaller than a page")
    return [p * PAGE for p in random.Random(seed).sample(range(pages), min(count, pages))]


def random_preads(path: Path, offsets: list[int]) -> list[float]:
    """One 4 KiB pread at each offset, after POSIX_FADV_RANDOM (which turns readahead
    off for this file, so each miss is one page); returns each latency in µs."""
    lat: list[float] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        clock = time.perf_counter_ns
        for off in offsets:
            t0 = clock()
            data = os.pread(fd, PAGE, off)
            t1 = clock()
            if len(data) != PAGE:
                raise OSError(f"short read at {off}: {len(data)} bytes")
            lat.append((t1 - t0) / 1000.0)
    finally:
        os.close(fd)
    return lat


def metadata_walk(root: Path) -> tuple[int, float]:
    """find + stat: lists every directory and lstat()s every entry (the root too);
    returns (entries, seconds)."""
    start = time.perf_counter()
    count = 0
    stack = [os.fspath(root)]
    os.lstat(stack[0])
    count += 1
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            names = [e.name for e in it]
        for name in names:
            p = os.path.join(d, name)
            st = os.lstat(p)
            count += 1
            if (st.st_mode & 0o170000) == 0o040000:
                stack.append(p)
    return count, time.perf_counter() - start
