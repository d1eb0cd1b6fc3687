"""Foreign, truncated and forged images, and bad mkimage arguments: one clear line, exit 2."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pagerfs.store import BuildError, FormatError, Image, IntegrityError, build_image
from pagerfs.store import format as fmt

COMMANDS = [["verify"], ["ls"], ["cat", None, "/f"], ["corrupt", None, "/f", "--page", "0"]]


def one_line_failure(r, status: int = 2) -> None:
    assert r.rc == status, r
    assert r.err.startswith(b"pagerfs: ") and r.err.count(b"\n") == 1, r.err
    assert b"Traceback" not in r.err


def run_all(cli, image) -> list:
    runs = []
    for cmd in COMMANDS:
        args = [cmd[0], str(image), *cmd[2:]] if len(cmd) > 1 else [cmd[0], str(image)]
        runs.append(cli(args))
    return runs


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "tree"
    root.mkdir()
    (root / "f").write_bytes(random.Random(1).randbytes(40000))
    (root / "d").mkdir()
    (root / "d" / "g").write_bytes(b"g" * 100)
    (root / "d" / "h").write_bytes(b"h" * 100)
    os.symlink("f", root / "s")
    return root


@pytest.fixture
def image(small_tree, tmp_path) -> Path:
    path = tmp_path / "img"
    build_image(small_tree, path, chunk_size=16384)
    return path


def test_foreign_files_are_refused(tmp_path, cli, small_tree):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    text = tmp_path / "text"
    text.write_bytes(b"hello world\n" * 100)
    noise = tmp_path / "noise"
    noise.write_bytes(random.Random(2).randbytes(5000))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (empty, text, noise, fifo, tmp_path, tmp_path / "missing", small_tree / "f"):
        for r in run_all(cli, path):
            one_line_failure(r)


def test_truncated_image_is_refused(image, cli):
    raw = image.read_bytes()
    for size in (1, 8, fmt.HEADER_SIZE - 1, fmt.HEADER_SIZE, fmt.HEADER_SIZE + 10, len(raw) // 2, len(raw) - 1):
        image.write_bytes(raw[:size])
        for r in run_all(cli, image):
            one_line_failure(r)
        with pytest.raises(FormatError):
            Image.open(image)


def _with_version(image, version: int) -> None:
    raw = bytearray(image.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]))
    fields = {f: getattr(header, f) for f in header.__dataclass_fields__}
    raw[: fmt.HEADER_SIZE] = fmt.pack_header(fmt.Header(**{**fields, "version": version}))
    image.write_bytes(bytes(raw))


@pytest.mark.parametrize("version", [1, 2, 3, fmt.VERSION + 1, 0])
def test_other_versions_are_refused_with_advice(image, cli, version):
    # Older images (1: one SHA-256 per block; 2: page hashes but no block digests; 3:
    # tails on page boundaries, holes stored as zeros) and unknown versions are not
    # read; the message names the version and what to do.
    assert version != fmt.VERSION
    _with_version(image, version)
    for args in (["ls", str(image)], ["verify", str(image)]):
        r = cli(args)
        one_line_failure(r)
        assert b"image format version %d; rebuild it with this pagerfs" % version in r.err


def _rename_entry(tables: dict[str, bytes], old: bytes, new: bytes) -> dict[str, bytes]:
    assert len(old) == len(new)
    strings = tables["strings"]
    at = strings.index(old)
    return {"strings": strings[:at] + new + strings[at + len(old) :]}


@pytest.mark.parametrize("bad_name", [b"/", b"\0", b".", b".."])
def test_forged_names_outside_the_tree_are_refused(image, cli, forge, bad_name):
    reseal, tables_of = forge
    # "f" is the first name in the root; a forger makes it "/", NUL, "." or "..".
    tables = tables_of(image)
    strings = tables["strings"]
    if len(bad_name) == 2:  # "..": widen the entry for "d" (the first name) by one byte
        dirents = bytearray(tables["dirents"])
        noff, nlen, ino = fmt.DIRENT.unpack_from(dirents, 0)
        assert strings[noff : noff + nlen] == b"d"
        fmt.DIRENT.pack_into(dirents, 0, noff, 2, ino)
        strings = strings[:noff] + b".." + strings[noff + 2 :]
        reseal(image, {"dirents": bytes(dirents), "strings": strings})
    else:
        reseal(image, {"strings": strings.replace(b"d", bad_name, 1)})
    for r in run_all(cli, image):
        one_line_failure(r)
    with pytest.raises(FormatError, match="invalid name"):
        Image.open(image)


def _forge_inode(image, forge, ino: int, **changes) -> None:
    reseal, tables_of = forge
    inodes = bytearray(tables_of(image)["inodes"])
    names = ["kind", "mode", "uid", "gid", "nlink", "mtime_ns", "size", "first", "count"]
    rec = dict(zip(names, fmt.INODE.unpack_from(inodes, (ino - 1) * fmt.INODE.size)))
    rec.update(changes)
    fmt.INODE.pack_into(inodes, (ino - 1) * fmt.INODE.size, *rec.values())
    reseal(image, {"inodes": bytes(inodes)})


@pytest.mark.parametrize("change", [
    {"count": 1000},  # root lists entries past the table
    {"kind": 2},  # root is a file
    {"mode": 0o100644},  # root's mode says file
    {"nlink": 7},
])
def test_forged_root_is_refused(image, cli, forge, change):
    _forge_inode(image, forge, 1, **change)
    with pytest.raises(FormatError):
        Image.open(image)
    for r in run_all(cli, image):
        one_line_failure(r)


def test_forged_cycle_and_bounds_are_refused(image, cli, forge, tmp_path):
    reseal, tables_of = forge
    pristine = image.read_bytes()
    with Image.open(image) as img:
        d = img.resolve("d")
        f = img.resolve("f")
        s = img.resolve("s")
    # A directory entry that points back at the root: a cycle.
    tables = tables_of(image)
    dirents = bytearray(tables["dirents"])
    for i in range(len(dirents) // fmt.DIRENT.size):
        noff, nlen, ino = fmt.DIRENT.unpack_from(dirents, i * fmt.DIRENT.size)
        if ino == d:
            fmt.DIRENT.pack_into(dirents, i * fmt.DIRENT.size, noff, nlen, 1)
    reseal(image, {"dirents": bytes(dirents)})
    with pytest.raises(FormatError):
        Image.open(image)
    # A file whose size claims more chunks than it has, a block outside the data.
    for change in ({"size": 10**12}, {"first": 10**6}):
        image.write_bytes(pristine)
        _forge_inode(image, forge, f, **change)
        with pytest.raises(FormatError):
            Image.open(image)
    image.write_bytes(pristine)
    _forge_inode(image, forge, s, size=5, count=5)  # symlink target runs off the end
    with pytest.raises(FormatError):
        Image.open(image)
    image.write_bytes(pristine)
    blocks = bytearray(tables_of(image)["blocks"])
    off, stored, length = fmt.BLOCK.unpack_from(blocks, 0)
    fmt.BLOCK.pack_into(blocks, 0, off, stored + 10**9, length)
    reseal(image, {"blocks": bytes(blocks)})
    with pytest.raises(FormatError, match="out of bounds"):
        Image.open(image)
    one_line_failure(cli(["cat", str(image), "f"]))


def test_forged_page_hash_counts_and_chunk_bounds_are_refused(image, cli, forge):
    reseal, tables_of = forge
    pristine = image.read_bytes()
    tables = tables_of(image)
    # A page hash more or fewer than the blocks' pages.
    for hashes in (tables["pagehashes"] + bytes(32), tables["pagehashes"][:-32]):
        image.write_bytes(pristine)
        reseal(image, {"pagehashes": hashes})
        with pytest.raises(FormatError, match="page hash count does not match the blocks"):
            Image.open(image)
        for r in run_all(cli, image):
            one_line_failure(r)
    # A chunk that runs past the end of its block, or names a block that is not there.
    for change in ({"offset": 1 << 20}, {"block": 10**6}):
        image.write_bytes(pristine)
        chunkmap = bytearray(tables["chunkmap"])
        entry = dict(zip(("block", "offset"), fmt.CHUNKMAP.unpack_from(chunkmap, 0)))
        fmt.CHUNKMAP.pack_into(chunkmap, 0, *{**entry, **change}.values())
        reseal(image, {"chunkmap": bytes(chunkmap)})
        with pytest.raises(FormatError, match="chunk 0 out of bounds"):
            Image.open(image)


def test_forged_page_hash_fails_exactly_its_page(image, small_tree, cli, forge):
    # A forger who rewrites a page hash (and every checksum above it) gets an image that
    # opens, and whose one page fails: the reader, verify and cat all say so.
    reseal, tables_of = forge
    data = (small_tree / "f").read_bytes()
    with Image.open(image) as img:
        ino = img.resolve("f")
        block, offset, _, _ = img._chunk_entry(ino, 1)  # chunk 1: pages 4-7, a full chunk
        assert offset == 0
        first_hash = img._block_hash[block]
    page = 6
    at = (first_hash + page - 4) * fmt.PAGE_HASH
    hashes = bytearray(tables_of(image)["pagehashes"])
    hashes[at] ^= 1
    reseal(image, {"pagehashes": bytes(hashes)})
    with Image.open(image) as img:
        ino = img.resolve("f")
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 1)
        assert (caught.value.first_page, caught.value.last_page, caught.value.pages) == (6, 6, {6})
        cp = img.read_chunk_pages(ino, 1, 4, 2)  # pages 4 and 5 only: both good
        assert (cp.verified, cp.bad) == (range(4, 6), frozenset())
        assert cp.data[: 2 * 4096] == data[4 * 4096 : 6 * 4096]
        assert img.read_pages(ino, 7, 1) == data[7 * 4096 : 8 * 4096]
        with pytest.raises(IntegrityError):
            img.read_pages(ino, 5, 2)
    v = cli(["verify", str(image)])
    assert v.rc == 1 and v.out.splitlines() == [b"/f: pages 6-6: IO_DATA_INTEGRITY"], v


def test_mkimage_bad_arguments(tmp_path, cli, small_tree):
    a_file = small_tree / "f"
    cases = [
        [str(tmp_path / "missing"), str(tmp_path / "x.img")],
        [str(a_file), str(tmp_path / "x.img")],
        [str(small_tree), str(tmp_path / "no" / "such" / "x.img")],
        [str(small_tree), str(tmp_path)],  # the destination is a directory
        [str(small_tree), "/proc/pagerfs-test.img"],  # cannot be written
        [str(small_tree), str(tmp_path / "x.img"), "--chunk-size", "3000"],
    ]
    for args in cases:
        r = cli(["mkimage", "--quiet", *args])
        one_line_failure(r)
    assert sorted(os.listdir(tmp_path)) == []
    r = cli(["mkimage", str(small_tree), str(tmp_path / "x.img"), "--chunk-size", "lots"])
    assert r.rc == 2 and b"not a size" in r.err


def test_failed_build_leaves_nothing_and_keeps_the_old_image(tmp_path, small_tree):
    dest = tmp_path / "out.img"
    dest.write_bytes(b"the previous image")

    def explode(nbytes: int, nfiles: int) -> None:
        raise BuildError("stop here")

    with pytest.raises(BuildError):
        build_image(small_tree, dest, advance=explode)
    assert dest.read_bytes() == b"the previous image"
    assert os.listdir(tmp_path) == ["out.img"]


def test_sigterm_during_build_leaves_no_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # Allocated (not a hole, which costs the build nothing) but never written, so it
    # takes no disk time to make: reading, hashing and compressing 2 GiB of zeros
    # takes the build a few seconds.
    made = subprocess.run(["fallocate", "-l", str(2 << 30), str(src / "big")], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"fallocate: {made.stderr.decode().strip()}")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pagerfs", "mkimage", "--quiet", str(src),
                             str(out / "x.img")], stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 30
    while not os.listdir(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the temporary file: the build has started
    assert proc.poll() is None, "the build ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == b"pagerfs: interrupted\n"
    assert os.listdir(out) == []
    shutil.rmtree(src)


def _forge_stored(image: Path, name: str, stored: bytes, length: int | None = None) -> None:
    """Replace the stored bytes of one table (and perhaps its uncompressed length),
    every checksum recomputed: what only a forger makes, since the table's checksum
    covers its stored bytes."""
    raw = image.read_bytes()
    header = fmt.unpack_header(raw[: fmt.HEADER_SIZE])
    t = header.tables[name]
    table = fmt.Table(t.offset, len(stored), t.length if length is None else length,
                      hashlib.sha256(stored).digest())
    body = raw[: t.offset] + stored + raw[t.offset + t.stored :]
    new = dataclasses.replace(header, tables={**header.tables, name: table}, image_size=len(body))
    # Tables after this one moved: the stored bytes changed length.
    moved = {n: dataclasses.replace(e, offset=e.offset + len(stored) - t.stored)
             if e.offset > t.offset else e for n, e in new.tables.items()}
    new = dataclasses.replace(new, tables=moved)
    image.write_bytes(fmt.pack_header(new) + body[fmt.HEADER_SIZE :])


def _pieces_of(image: Path, name: str) -> bytes:
    raw = image.read_bytes()
    t = fmt.unpack_header(raw[: fmt.HEADER_SIZE]).tables[name]
    return raw[t.offset : t.offset + t.stored]


@pytest.mark.parametrize("damage", [
    "garbage", "truncated", "extended", "zero length", "piece too long", "huge length",
    "short decode",
])
def test_forged_compressed_tables_are_one_line(image, cli, damage, tmp_path):
    # Stored tables that do not decode to their length: refused at open with one line
    # and exit status 2, without allocating what a length field claims.
    stored = _pieces_of(image, "inodes")
    length = None
    (n,) = fmt.PIECE_HEAD.unpack_from(stored, 0)
    rng = random.Random(damage)
    if damage == "garbage":  # lz4 that does not decode (the first piece is lz4)
        stored = stored[:4] + rng.randbytes(n)
    elif damage == "truncated":
        stored = stored[: len(stored) // 2]
    elif damage == "extended":
        stored = stored + b"\0" * 7
    elif damage == "zero length":
        stored = fmt.PIECE_HEAD.pack(0) + stored[4:]
    elif damage == "piece too long":
        stored = fmt.PIECE_HEAD.pack(1 << 31) + stored[4:]
    elif damage == "huge length":  # 2^60 bytes claimed: refused before any allocation
        length = (1 << 60) - (1 << 60) % fmt.INODE.size
    else:  # a piece that decodes to fewer bytes than it must
        length = (fmt.unpack_header(image.read_bytes()[: fmt.HEADER_SIZE]).tables["inodes"].length
                  + fmt.INODE.size)
    _forge_stored(image, "inodes", stored, length)
    with pytest.raises(FormatError, match="corrupt (metadata: inodes table|header: inodes table)"):
        Image.open(image)
    for r in run_all(cli, image):
        one_line_failure(r)
