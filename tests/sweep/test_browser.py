"""The HTML report as a browser shows it: headless Chromium takes a screenshot, and the
page map's colours are looked for in its pixels."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import pytest

PY = sys.executable


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("PAGERFS_REQUIRE_FUSE") == "1":
        pytest.fail("PAGERFS_REQUIRE_FUSE=1 (CI) but chromium is not installed (tools/setup)")
    pytest.skip("chromium is not installed (Debian package chromium; tools/setup installs it)")


def screenshot(html_path, png_path, size=(800, 400)) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
             f"--screenshot={png_path}", f"file://{html_path}"],
            capture_output=True, timeout=120, check=True)


def pixels(png: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB or RGBA PNG, as Chromium writes them."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    out, previous = [], bytearray(stride)
    for row in range(height):
        kind = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += [tuple(line[i:i + 3]) for i in range(0, stride, bpp)]
        previous = line
    return out


def test_the_report_renders_with_each_page_coloured_by_verdict(run_sweep, helpers_sweep,
                                                                tmp_path):
    report = tmp_path / "report.html"
    r = run_sweep("--report", report, "--", "sh", "-c",
                  f"sha256sum {{}}/data.bin && "
                  f"exec {PY} {helpers_sweep.PROGRAMS / 'mmap_hash.py'} {{}}/data.bin.gz")
    assert r.status == 1
    handled = sum(run["verdict"] == "handled" for run in r.doc["runs"])
    crashed = sum(run["verdict"] == "crashed" for run in r.doc["runs"])
    assert handled == 4 and crashed >= 2
    png = tmp_path / "report.png"
    screenshot(report, png)
    seen = pixels(png.read_bytes())
    green, red = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)
    # Each page is a 12x12 square of its verdict's colour (the legend adds a swatch or
    # two): the map is really drawn, in the right colours, in the right numbers.
    cell = 12 * 12
    assert seen.count(green) >= handled * cell
    assert seen.count(red) >= crashed * cell
    assert seen.count((255, 255, 255)) > len(seen) // 2  # a page, not a blank or error
