"""Damage to the image file itself while it is mounted: the reads that meet it get EIO
through the native codec's real checks, the rest of the mount goes on serving."""

from __future__ import annotations

import os
import shutil
import subprocess

from pagerfs.store import Image

PAGE, CHUNK = 4096, 64 * 1024  # the chunk size of tests/fuse/conftest.py's images
FILE = "big.bin"  # 10 chunks of 16 pages (tests/fuse/conftest.py make_tree)


def dd(path, first_page: int, pages: int) -> subprocess.CompletedProcess:
    return subprocess.run(["dd", f"if={path}", "bs=4096", f"skip={first_page}",
                           f"count={pages}", "iflag=direct", "status=none"],
                          capture_output=True)


def test_image_truncated_under_a_mount_fails_what_is_gone_and_serves_the_rest(
        image, tree, tmp_path, helpers):
    copy = tmp_path / "img"
    shutil.copyfile(image, copy)
    source = (tree / FILE).read_bytes()
    with Image.open(copy) as img:
        ino = img.resolve(FILE)
        cut = img._blocks[img._chunk_entry(ino, 5)[0]][0]  # where chunk 5 is stored
        kept = [i for i in range(10) if img._blocks[img._chunk_entry(ino, i)[0]][0] < cut]
    assert kept == [0, 1, 2, 3, 4]
    with helpers.mounted(copy, tmp_path / "m") as mount:
        path = mount.path / FILE
        os.truncate(copy, cut)  # the image shrinks under the daemon's open fd
        gone = dd(path, 5 * CHUNK // PAGE, 1)
        assert gone.returncode != 0 and b"Input/output error" in gone.stderr
        here = dd(path, 0, 5 * CHUNK // PAGE)
        assert here.returncode == 0 and here.stdout == source[: 5 * CHUNK]
        # The daemon is alive and counted the failure as an I/O error of the image.
        stats = mount.stats(FILE)
        assert stats["pages_failed"].get("IO", 0) >= 1
        assert set(stats["pages_failed"]) == {"IO"}
        assert sorted(os.listdir(mount.path)) == sorted(os.listdir(tree))
