"""Format 4: holes stored as nothing, tails packed byte after byte."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from pagerfs.store import Image, IntegrityError, build_image, scrub
from pagerfs.store import format as fmt

CHUNK = 16384
TiB = 1 << 40


def _sparse(path, size: int, data_at: dict[int, bytes]) -> None:
    """A real sparse file: truncate(1) to the size, then data written at offsets."""
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)
    with open(path, "r+b") as f:
        for offset, data in data_at.items():
            f.seek(offset)
            f.write(data)


def _holes_supported(path) -> bool:
    st = os.stat(path)
    return st.st_blocks * 512 < st.st_size


def test_a_one_tib_sparse_file_is_built_stored_and_read_without_its_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    mark = os.urandom(5000)
    _sparse(src / "huge", TiB, {TiB // 2 + 100: mark})
    if not _holes_supported(src / "huge"):
        pytest.skip(f"{tmp_path} does not keep holes")
    build_image(src, tmp_path / "h.img")  # reads 5000 bytes of it, not a terabyte
    cs = fmt.DEFAULT_CHUNK_SIZE
    # What is stored: the chunk map (one entry per chunk, all but one holes) and one
    # chunk of data; no block holds zeros.
    assert os.path.getsize(tmp_path / "h.img") < (TiB // cs) * fmt.CHUNKMAP.size + (1 << 20)
    with Image.open(tmp_path / "h.img") as img:
        ino = img.resolve("huge")
        st = img.stat(ino)
        assert st.size == TiB and st.allocated == cs  # the one chunk with data
        assert img.info().block_count == 1
        index = (TiB // 2) // cs
        assert img.is_hole(ino, 0) and not img.is_hole(ino, index)
        img.prefetch(ino, 0)  # a hole: nothing stored, nothing to ask the host for
        assert img.read_pages(ino, 12345, 2) == bytes(8192)
        page = (TiB // 2 + 100) // 4096
        got = img.read_pages(ino, page, 2)
        assert got[100 : 100 + 5000] == mark and got[:100] == bytes(100)
        last = img.chunk_range(ino, 0, 1 << 40)[-1]
        assert img.read_chunk(ino, last) == bytes(cs)
        report = scrub(img)
        assert report.damage == [] and report.blocks_checked == 1


def test_sparse_digests_equal_fsverity_digest(tmp_path, real_fsverity, cli):
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(4)
    _sparse(src / "middle", 40 << 20, {(17 << 20) + 3: rng.randbytes(70000)})
    _sparse(src / "ends-in-a-hole", (9 << 20) + 4097, {0: rng.randbytes(10)})
    _sparse(src / "starts-with-one", 3 * CHUNK + 100, {3 * CHUNK + 10: b"tail"})
    _sparse(src / "all-hole", 5 << 20, {})
    if not _holes_supported(src / "all-hole"):
        pytest.skip(f"{tmp_path} does not keep holes")
    build_image(src, tmp_path / "s.img", chunk_size=CHUNK)
    paths = [bytes(p) for p in sorted(src.iterdir())]
    expected = real_fsverity(paths)
    with Image.open(tmp_path / "s.img") as img:
        for path in paths:
            ino = img.resolve(os.path.basename(path))
            assert img.fsverity_digest(ino) == expected[path], path
            data = Path(os.fsdecode(path)).read_bytes()
            got = b"".join(img.read_chunk(ino, i) for i in img.chunk_range(ino, 0, 1 << 30))
            assert got == data, path
        assert img.stat(img.resolve("all-hole")).allocated == 0
        assert img.stat(img.resolve("starts-with-one")).allocated == 100  # its tail
        # A tamper hook on a hole still goes through verification: zeros changed fail.
        ino = img.resolve("all-hole")
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 3, tamper=lambda b: b"\1" + b[1:])
        assert caught.value.pages == {12}
    # Nothing is stored for a hole, so nothing there can be damaged offline.
    r = cli(["corrupt", str(tmp_path / "s.img"), "all-hole", "--page", "7"])
    assert (r.rc, r.out) == (2, b"")
    assert r.err == b"pagerfs: all-hole: page 7 is in a hole: nothing is stored for it\n"
    r = cli(["corrupt", str(tmp_path / "s.img"), "middle", "--page", str((17 << 20) // 4096 + 1)])
    assert r.rc == 0 and r.out.startswith(b"/middle: pages ")


def test_tails_are_packed_byte_after_byte_and_keep_their_own_leaves(tmp_path, real_fsverity):
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(8)
    sizes = [rng.randrange(1, 300) for _ in range(40)] + [4097, 5000]
    for i, n in enumerate(sizes):
        (src / f"t{i:02d}").write_bytes(rng.randbytes(n))
    build_image(src, tmp_path / "t.img", chunk_size=CHUNK)
    with Image.open(tmp_path / "t.img") as img:
        # One fragment holds them all, exactly their bytes: no 4 KiB slot per tail.
        assert img.info().block_count == 1
        assert img._blocks[0][2] == sum(sizes)
        offsets = [img._chunk_entry(img.resolve(f"t{i:02d}"), 0)[1] for i in range(len(sizes))]
        assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
        paths = [bytes(src / f"t{i:02d}") for i in range(len(sizes))]
        expected = real_fsverity(paths)
        for i, path in enumerate(paths):
            ino = img.resolve(f"t{i:02d}")
            assert img.read_chunk(ino, 0) == Path(os.fsdecode(path)).read_bytes()
            assert img.fsverity_digest(ino) == expected[path]
            if sizes[i] > 4096:  # its second page, alone, checks against its own leaf
                assert img.read_pages(ino, 1, 1) == Path(os.fsdecode(path)).read_bytes()[4096:]
