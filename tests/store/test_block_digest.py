"""The block digest (formats 3 and 4): what it is, when readers use it (a whole block: one hash
call), and what they do when it contradicts the page hashes."""

from __future__ import annotations

import dataclasses
import hashlib
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


def test_block_digest_is_sha256_of_the_bytes_then_the_page_hashes(pristine):
    raw = pristine.read_bytes()
    header = fmt.unpack_header(raw[: fmt.HEADER_SIZE])
    t = header.tables["blocks"]
    blocks = raw[t.offset : t.offset + t.length]
    assert len(blocks) == 56 * header.block_count  # 24 bytes of v2 + the 32-byte digest
    h = header.tables["pagehashes"]
    hashes = raw[h.offset : h.offset + h.length]
    records = [fmt.BLOCK.unpack_from(blocks, b * 56) for b in range(header.block_count)]
    ends = [rec[3] for rec in records[1:]] + [len(hashes) // 32]
    for b, (off, stored, length, first_hash, digest) in enumerate(records):
        data = raw[off : off + stored]
        if stored < length:
            data = lz4.block.decompress(data, uncompressed_size=length)
        # A block's page hashes run up to the next block's: for a fragment, each of its
        # tails' own, one per page of each tail.
        own = hashes[first_hash * 32 : ends[b] * 32]
        assert len(own) >= -(-length // 4096) * 32
        assert digest == hashlib.sha256(data + own).digest(), b


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


def test_a_whole_chunk_is_verified_with_one_hash_call(pristine, tree, hash_calls):
    source = (tree / "big").read_bytes()
    with Image.open(pristine, codec=_codec_py) as img:
        big = img.resolve("big")
        hash_calls.clear()
        assert img.read_chunk(big, 2) == source[2 * CHUNK : 3 * CHUNK]
        assert hash_calls == [CHUNK]
        hash_calls.clear()
        cp = img.read_chunk_pages(big, 2, 2 * PPC, PPC)  # all of the chunk's pages
        assert (cp.verified, cp.bad) == (range(8, 12), frozenset())
        assert hash_calls == [CHUNK]
        # A subset of the pages: page hashes only, one call per page asked for.
        hash_calls.clear()
        cp = img.read_chunk_pages(big, 2, 9, 2)
        assert cp.good() == [9, 10] and hash_calls == [4096, 4096]
        # Damage: the digest fails, then every page is hashed to find which.
        hash_calls.clear()
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(big, 2, tamper=flip_at(4096 + 7))
        assert caught.value.pages == {9}
        assert hash_calls == [CHUNK] + [4096] * PPC
        # A tail in a shared fragment is part of its block: page hashes only, its last
        # page zero padded, wherever in the fragment it starts...
        small = img.resolve("small-a")
        _, offset, _, _ = img._chunk_entry(small, 0)
        assert offset == 2 * 4096 + 10  # right after the tail of "big", no padding
        hash_calls.clear()
        assert img.read_chunk(small, 0) == (tree / "small-a").read_bytes()
        assert hash_calls == [4096]
        # ...but one alone in its fragment (the last, "text"'s: it did not fit) is all of it.
        text = img.resolve("text")
        index = img.chunk_range(text, 0, 1 << 30)[-1]
        block, offset, _, length = img._chunk_entry(text, index)
        assert offset == 0 and img._blocks[block][2] == length < CHUNK
        hash_calls.clear()
        assert img.read_chunk(text, index) == (tree / "text").read_bytes()[index * CHUNK :]
        assert hash_calls == [length]


def test_scrub_hashes_each_block_once(pristine, hash_calls):
    with Image.open(pristine, codec=_codec_py) as img:
        hash_calls.clear()
        report = scrub(img, jobs=2)
        lengths = sorted(length for _, _, length, _, _ in img._blocks)
    assert report.damage == [] and report.blocks_checked == len(lengths)
    assert sorted(hash_calls) == lengths


def _forge_digest(image: Path, forge, block: int) -> None:
    reseal, tables_of = forge
    blocks = bytearray(tables_of(image)["blocks"])
    at = block * fmt.BLOCK.size + fmt.BLOCK.size - 32
    blocks[at + 5] ^= 0x10
    reseal(image, {"blocks": bytes(blocks)})


def test_forged_digest_of_a_full_chunk_fails_whole_reads_of_it_not_partial_ones(
        image, tree, forge, cli):
    # The digest disagrees with bytes and page hashes that agree with each other: a
    # reader that checks the whole block cannot tell which is wrong, so it trusts none
    # of the block's pages; a reader of some pages checks only their hashes.
    source = (tree / "big").read_bytes()
    with Image.open(image) as img:
        big = img.resolve("big")
        block, offset, _, _ = img._chunk_entry(big, 2)
        assert offset == 0 and img._blocks[block][2] == CHUNK
    _forge_digest(image, forge, block)
    with Image.open(image) as img:
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(big, 2)
        assert caught.value.pages == frozenset(range(8, 12))
        assert (caught.value.first_page, caught.value.last_page) == (8, 11)
        cp = img.read_chunk_pages(big, 2, 0, 1 << 30)  # reported, not raised
        assert cp.verified == range(8, 12) and cp.bad == frozenset(range(8, 12))
        cp = img.read_chunk_pages(big, 2, 8, 3)
        assert cp.good() == [8, 9, 10] and cp.page(9) == source[9 * 4096 : 10 * 4096]
        assert img.read_pages(big, 11, 1) == source[11 * 4096 : 12 * 4096]
        assert img.read_chunk(big, 1) == source[CHUNK : 2 * CHUNK]
    v = cli(["verify", str(image)])
    assert v.rc == 1 and v.out.splitlines() == [b"/big: pages 8-11: IO_DATA_INTEGRITY"]
    c = cli(["cat", str(image), "big"])
    assert c.rc == 1 and c.out == source[: 2 * CHUNK]


def test_forged_digest_of_a_fragment_is_seen_by_verify_only(image, tree, forge, cli):
    # Tails are parts of their fragment, so no read of one checks the fragment's
    # digest; verify checks whole blocks and reports every page the fragment holds.
    with Image.open(image) as img:
        small = img.resolve("small-a")
        block = img._chunk_entry(small, 0)[0]
        held: dict[bytes, list[int]] = {}
        for ino in range(2, img.inode_count + 1):
            _, _, _, _, _, _, size, first, count, _ = img._inodes[ino - 1]
            for index in range(count):
                if img._chunk_entry(ino, index)[0] == block:
                    first_page, npages = img.chunk_pages(ino, index)
                    held[img.path_of(ino)] = [first_page, first_page + npages - 1]
        assert len(held) >= 2  # a shared fragment
    _forge_digest(image, forge, block)
    with Image.open(image) as img:
        for name in ("big", "text", "small-a", "small-b"):
            ino = img.resolve(name)
            want = (tree / name).read_bytes()
            got = b"".join(img.read_chunk(ino, i) for i in img.chunk_range(ino, 0, 1 << 30))
            assert got == want, name
    v = cli(["verify", str(image)])
    assert v.rc == 1
    assert v.out.splitlines() == sorted(b"%s: pages %d-%d: IO_DATA_INTEGRITY" % (path, a, b)
                                        for path, (a, b) in held.items())


@pytest.mark.parametrize("record", [24, 56])
def test_blocks_table_of_the_wrong_record_size_is_refused(image, cli, record):
    # A header whose blocks table holds 24-byte records (format 2's, no digest), or
    # loses the last digest, is refused at open even with every checksum right.
    raw = bytearray(image.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]))
    t = header.tables["blocks"]
    length = header.block_count * record - (32 if record == 56 else 0)
    table = bytes(raw[t.offset : t.offset + length])
    blocks = fmt.Table(t.offset, length, hashlib.sha256(table).digest())
    tables = {**header.tables, "blocks": blocks}
    raw[: fmt.HEADER_SIZE] = fmt.pack_header(dataclasses.replace(header, tables=tables))
    image.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="blocks table out of bounds|block count"):
        Image.open(image)
    for args in (["verify", str(image)], ["cat", str(image), "big"]):
        r = cli(args)
        assert r.rc == 2 and r.err.startswith(b"pagerfs: ") and r.err.count(b"\n") == 1
