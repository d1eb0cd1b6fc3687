"""How a program copes with storage that fails: a test file to copy into your suite.

With pagerfs installed, pytest has two fixtures (the pagerfs pytest plugin):

- `pagerfs_image(tree_or_mapping)` builds an image of a directory, or of a
  {relative path: bytes or str} mapping, once per content (cached across runs).
- `pagerfs.mount(image, faults=..., ...)` mounts it for this test and returns a Mount:
  `m / "path"` is a file in it, `m.fault(path, pages=...)` breaks pages while it is
  mounted, `m.fired(...)` tells whether a rule failed anything.

Each test here asserts that a reader *notices* a failed page (EIO from read(), SIGBUS
from an mmap access) instead of returning wrong data. Where FUSE is missing, the tests
are skipped with the reason (PAGERFS_REQUIRE_FUSE=1 makes them fail instead).
"""

import errno
import io
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

PAGE = 4096


def a_json_document() -> str:
    return json.dumps({"records": [{"id": i, "name": f"record {i}"} for i in range(2000)]})


def a_zip_archive() -> bytes:
    """Three members of 64 KiB each, stored (so member bytes sit at known offsets)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in ("a.bin", "b.bin", "c.bin"):
            z.writestr(name, bytes((i * 7 + len(name)) % 251 for i in range(64 * 1024)))
    return out.getvalue()


def a_sqlite_database() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.sqlite"
        db = sqlite3.connect(path)
        with db:
            db.execute("PRAGMA page_size = 4096")
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
            db.executemany("INSERT INTO t VALUES (?, ?)",
                           ((i, f"row {i} " * 20) for i in range(3000)))
        db.close()
        return path.read_bytes()


def test_json_load_raises_on_a_failed_page(pagerfs, pagerfs_image):
    image = pagerfs_image({"data.json": a_json_document()})
    # Armed before the mount answers: the very first read of page 1 fails.
    m = pagerfs.mount(image, faults=[("data.json", "pages=1 error=IO")])
    with open(m / "data.json") as f, pytest.raises(OSError) as info:
        json.load(f)
    assert info.value.errno == errno.EIO
    assert m.fired("data.json")  # the test passed because the fault really happened


def test_zipfile_raises_on_a_failed_page_of_a_member(pagerfs, pagerfs_image):
    archive = a_zip_archive()
    member = zipfile.ZipFile(io.BytesIO(archive)).getinfo("b.bin")
    middle = (member.header_offset + 32 * 1024) // PAGE  # a page inside b.bin's bytes
    m = pagerfs.mount(pagerfs_image({"archive.zip": archive}))
    with zipfile.ZipFile(m / "archive.zip") as z:  # the central directory reads fine
        assert z.read("a.bin") == zipfile.ZipFile(io.BytesIO(archive)).read("a.bin")
        rule = m.fault("archive.zip", pages=middle)  # broken while the archive is open
        with pytest.raises(OSError) as info:
            z.read("b.bin")
        assert info.value.errno == errno.EIO
        assert m.fired(rule)
        rule.remove()
        assert len(z.read("b.bin")) == 64 * 1024  # and it reads again once repaired


def test_sqlite3_immutable_raises_on_a_failed_page(pagerfs, pagerfs_image):
    database = a_sqlite_database()
    pages = len(database) // PAGE
    m = pagerfs.mount(pagerfs_image({"db.sqlite": database}),
                      faults=[("db.sqlite", f"pages={pages // 2} error=IO")])
    # immutable=1: the database cannot change, so sqlite takes no locks and writes no
    # journal, as for a file on read-only media.
    db = sqlite3.connect((m / "db.sqlite").as_uri() + "?immutable=1", uri=True)
    try:
        assert db.execute("SELECT body FROM t WHERE id = 0").fetchone()[0].startswith("row 0 ")
        with pytest.raises(sqlite3.DatabaseError):
            db.execute("SELECT count(*), sum(length(body)) FROM t").fetchone()
    finally:
        db.close()
    assert m.fired("db.sqlite")


MMAP_READER = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print(m[0:5].decode(), flush=True)  # page 0 is fine
    m[int(sys.argv[2]) * 4096]          # the failed page: the kernel sends SIGBUS
    print("read a failed page", flush=True)
"""


def test_an_mmap_reader_dies_of_sigbus(pagerfs, pagerfs_image):
    m = pagerfs.mount(pagerfs_image({"data.bin": b"hello" + bytes(10 * PAGE)}),
                      faults=[("data.bin", "pages=4 error=IO_DATA_INTEGRITY")])
    # In a child process: SIGBUS kills whoever touches the page, and that must not be
    # the test runner.
    done = subprocess.run([sys.executable, "-c", MMAP_READER, str(m / "data.bin"), "4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGBUS, done
    assert done.stdout == "hello\n"
