"""With the kernel's read-ahead off, the trace's READs are exactly the pages a program
touched: what `pagerfs sweep` builds its plan from."""

from __future__ import annotations

import os
import subprocess
import sys

PAGE = 4096
OFF = ("-o", "read_ahead=0,read_ahead_kb=0")


def read_pages(events) -> list[tuple[str, int]]:
    out = []
    for event in events:
        if event["event"] == "read":
            first = event["offset"] // PAGE
            last = (event["offset"] + event["length"] - 1) // PAGE
            out += [(event["path"], p) for p in range(first, last + 1)]
    return out


def bdi_read_ahead_kb(path) -> int:
    dev = os.stat(path).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        return int(f.read())


def test_reading_page_5_traces_page_5_only(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m", *OFF, trace=True) as m:
        # Set before `pagerfs mount` returned, not some time after.
        assert bdi_read_ahead_kb(m.path) == 0
        with open(m.path / "big.bin", "rb") as f:
            f.seek(5 * PAGE)
            assert len(f.read(PAGE)) == PAGE
        assert read_pages(m.trace()) == [("/big.bin", 5)]


def test_mmap_and_sequential_reads_trace_one_page_per_read(image, tmp_path, helpers):
    reader = ("import mmap, sys\n"
              "f = open(sys.argv[1], 'rb')\n"
              "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
              "m[9 * 4096]; m[3 * 4096 + 7]\n")
    with helpers.mounted(image, tmp_path / "m", *OFF, trace=True) as m:
        subprocess.run([sys.executable, "-c", reader, m.path / "big.bin"], check=True)
        assert read_pages(m.trace()) == [("/big.bin", 9), ("/big.bin", 3)]
        before = len(read_pages(m.trace()))
        data = (m.path / "odd-size.bin").read_bytes()
        pages = read_pages(m.trace())[before:]
        assert pages == [("/odd-size.bin", p) for p in range(-(-len(data) // PAGE))]


def test_default_mount_keeps_a_wide_window(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m") as m:
        assert bdi_read_ahead_kb(m.path) == 1024
