"""Page hashes (format 5): every block, fragments too, has the SHA-256 of each of its own
4 KiB pages; what a read hashes to verify what it returns, and what the scrub hashes."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import lz4.block
import pytest

from pagerfs.store import FormatError, Image, IntegrityError, build_image, scrub
from pagerfs.store import _codec_py
from pagerfs.store import format as fmt

CHUNK = 16384
PPC = CHUNK // 4096


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digest") / "tree"
    root.mkdir()
    rng = random.Random(9)
    (root / "big").write_bytes(rng.randbytes(5 * CHUNK + 2 * 4096 + 10))  # raw blocks
    (root / "text").write_bytes(b"".join(rng.choice([b"vmo ", b"page\n", b"supply "])
                                         for _ in range(12000)))  # lz4 blocks
    (root / "small-a").write_bytes(rng.randbytes(3000))
    (root / "small-b").write_bytes(rng.randbytes(5000))
    return root


@pytest.fixture(scope="module")
def pristine(tree, tmp_path_factory) -> Path:
    image = tmp_path_factory.mktemp("digest") / "p.img"
    build_image(tree, image, chunk_size=CHUNK)
    return image


def test_every_block_has_the_hashes_of_its_own_pages(pristine, forge):
    _, tables_of = forge
    raw = pristine.read_bytes()
    header = fmt.unpack_header(raw[: fmt.HEADER_SIZE])
    tables = tables_of(pristine)
    assert len(tables["blocks"]) == 16 * header.block_count  # offset, stored, length
    hashes = tables["pagehashes"]
    first = 0
    for off, stored, length in fmt.BLOCK.iter_unpack(tables["blocks"]):
        data = raw[off : off + stored]
        if stored < length:
            data = lz4.block.decompress(data, uncompressed_size=length)
        n = -(-length // 4096)
        assert hashes[first * 32 : (first + n) * 32] == _codec_py.hash_pages(data)
        first += n
    assert first * 32 == len(hashes)  # and nothing else


@pytest.fixture
def hash_calls(monkeypatch) -> list[int]:
    """The length of the data of every SHA-256 the codec's Python oracle starts.

    What the reader asks the codec to verify is the same whichever codec it uses (and
    tests/store/test_codec.py checks the native codec answers as the oracle does), so an
    image opened with codec=_codec_py shows how many hashes of what size a read costs.
    """
    calls: list[int] = []
    lock = threading.Lock()

    def counting(data=b""):
        with lock:
            calls.append(len(data))
        return hashlib.sha256(data)

    monkeypatch.setattr(_codec_py, "sha256", counting)
    return calls


def flip_at(i: int):
    return lambda b: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def test_a_read_hashes_the_block_pages_it_returns_once(pristine, tree, hash_calls):
    source = (tree / "big").read_bytes()
    with Image.open(pristine, codec=_codec_py) as img:
        big = img.resolve("big")
        hash_calls.clear()
        assert img.read_chunk(big, 2) == source[2 * CHUNK : 3 * CHUNK]
        assert hash_calls == [4096] * PPC  # one codec call, each page once
        hash_calls.clear()
        cp = img.read_chunk_pages(big, 2, 9, 2)
        assert cp.good() == [9, 10] and hash_calls == [4096, 4096]
        # Damage fails just the page it is in.
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(big, 2, tamper=flip_at(4096 + 7))
        assert caught.value.pages == {9}
        # A tail in a shared fragment is checked by the fragment pages it lies in...
        small = img.resolve("small-a")
        _, offset, _, _ = img._chunk_entry(small, 0)
        assert offset == 2 * 4096 + 10  # right after the tail of "big", no padding
        hash_calls.clear()
        assert img.read_chunk(small, 0) == (tree / "small-a").read_bytes()
        assert hash_calls == [4096]  # bytes 8202-11201 of the fragment: its page 2
        # ...two when it spans two of them: small-b is bytes 11202-16201, pages 2 and 3.
        hash_calls.clear()
        small_b = img.resolve("small-b")
        assert img._chunk_entry(small_b, 0)[:2] == (img._chunk_entry(small, 0)[0], 11202)
        assert img.read_chunk(small_b, 0) == (tree / "small-b").read_bytes()
        assert hash_calls == [4096, 4096]
        # One alone in its fragment (the last, "text"'s: it did not fit) is all of it.
        text = img.resolve("text")
        index = img.chunk_range(text, 0, 1 << 30)[-1]
        block, offset, _, length = img._chunk_entry(text, index)
        assert offset == 0 and img._blocks[block][2] == length < CHUNK
        hash_calls.clear()
        assert img.read_chunk(text, index) == (tree / "text").read_bytes()[index * CHUNK :]
        assert hash_calls == [4096] * -(-length // 4096)


def test_scrub_hashes_each_page_once(pristine, hash_calls):
    with Image.open(pristine, codec=_codec_py) as img:
        hash_calls.clear()
        report = scrub(img, jobs=2)
        pages = sum(-(-length // 4096) for _, _, length in img._blocks)
    assert report.damage == [] and report.blocks_checked == len(img._blocks)
    assert hash_calls == [4096] * pages


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_blocks_table_of_the_wrong_size_is_refused(image, cli, forge, change):
    # A blocks table that is not whole 16-byte records (format 4's were 56 bytes), or
    # lacks a block the header counts, is refused at open even with every checksum right.
    reseal, tables_of = forge
    blocks = tables_of(image)["blocks"]
    reseal(image, {"blocks": blocks + bytes(8) if change == "longer" else blocks[:-16]})
    with pytest.raises(FormatError, match="blocks table out of bounds|block count"):
        Image.open(image)
    for args in (["verify", str(image)], ["cat", str(image), "big"]):
        r = cli(args)
        assert r.rc == 2 and r.err.startswith(b"pagerfs: ") and r.err.count(b"\n") == 1


def test_a_read_of_some_pages_of_a_chunk_preads_through_the_image_file_without_read_ahead(
        pristine, tree, monkeypatch):
    """The pages of a random read come from the image's second open file (host
    read-ahead off); whole chunks, as sequential reads and read-ahead take them, from
    the first. Closing the image closes both."""
    fds: list[int] = []
    real = _codec_py.read_block

    def read_block(fd, *args):
        fds.append(fd)
        return real(fd, *args)

    monkeypatch.setattr(_codec_py, "read_block", read_block)
    text = (tree / "text").read_bytes()
    img = Image.open(pristine, codec=_codec_py)
    ino = img.resolve("text")
    whole_fd, random_fd = img._fd, img._random_fd
    assert random_fd != whole_fd
    assert os.path.samestat(os.fstat(random_fd), os.fstat(whole_fd))

    part = img.read_chunk_pages(ino, 1, PPC + 1, 1)
    assert part.page(PPC + 1) == text[(PPC + 1) * 4096:(PPC + 2) * 4096]
    assert img.read_chunk(ino, 2) == text[2 * CHUNK:3 * CHUNK]
    assert img.read_chunk_pages(ino, 3, 3 * PPC, PPC).data == text[3 * CHUNK:4 * CHUNK]
    assert fds == [random_fd, whole_fd, whole_fd]

    img.close()
    for fd in (whole_fd, random_fd):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_prefetch_asks_the_host_for_the_chunks_stored_block_through_the_random_read_file(
        pristine, monkeypatch):
    """A prefetch hint is one POSIX_FADV_WILLNEED of the chunk's stored block on the
    file random reads pread from, and reads nothing itself."""
    advised: list[tuple] = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: (advised.append(args), real(*args)))
    monkeypatch.setattr(_codec_py, "read_block", None)  # a read would fail
    img = Image.open(pristine, codec=_codec_py)
    try:
        ino = img.resolve("text")
        block = img._chunk_entry(ino, 1)[0]
        offset, stored, _ = img._blocks[block]
        advised.clear()  # the open's own POSIX_FADV_RANDOM
        assert img.prefetch(ino, 1) is None
        assert advised == [(img._random_fd, offset, stored, os.POSIX_FADV_WILLNEED)]
    finally:
        img.close()
