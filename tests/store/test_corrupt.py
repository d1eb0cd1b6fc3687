"""Damage stored bytes, and every reader must see exactly the damaged pages fail: the
pages whose hashes no longer match when the block still decompresses, all the pages
of the block's chunks when it does not."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import pytest

from pagerfs.store import ChunkPages, Image, IntegrityError, StoreIOError, build_image, scrub

CHUNK = 64 * 1024
PAGES_PER_CHUNK = CHUNK // 4096


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c") / "tree"
    root.mkdir()
    rng = random.Random(3)
    (root / "big").write_bytes(rng.randbytes(10 * CHUNK + 3 * 4096 + 100))  # 11 chunks, raw
    # lz4 compresses this: a changed byte usually breaks decoding, damaging a whole chunk
    text = b"".join(rng.choice([b"pager ", b"chunk ", b"vmo\n", b"page "]) for _ in range(40000))
    (root / "text").write_bytes(text)
    (root / "d").mkdir()
    (root / "d" / "small-a").write_bytes(rng.randbytes(3000))
    (root / "d" / "small-b").write_bytes(rng.randbytes(9000))
    return root


@pytest.fixture(scope="module")
def pristine(tree, tmp_path_factory) -> Path:
    image = tmp_path_factory.mktemp("c") / "p.img"
    build_image(tree, image, chunk_size=CHUNK)
    return image


@pytest.mark.parametrize("page", [0, 5, 16, 47, 150, 159])
def test_corrupt_then_verify_and_cat_fail_at_exactly_that_page(page, tree, image, cli, cli_subprocess):
    # "big" is random, so its full chunks are stored raw and a changed byte changes one
    # page. (Its tail, pages 160-163, shares a compressed fragment: see below.)
    source = (tree / "big").read_bytes()
    r = cli_subprocess(["corrupt", str(image), "/big", "--page", str(page), "--seed", str(page)])
    assert r.rc == 0, r.err
    assert r.out.splitlines() == [b"/big: pages %d-%d" % (page, page)]

    v = cli(["verify", str(image)])
    assert v.rc == 1
    # What corrupt said is damaged is exactly what verify finds.
    assert v.out.splitlines() == [b"/big: pages %d-%d: IO_DATA_INTEGRITY" % (page, page)]
    assert v.err.startswith(b"pagerfs: ") and len(v.err.splitlines()) == 1

    c = cli(["cat", str(image), "big"])
    assert c.rc == 1
    assert c.out == source[: page * 4096]  # every good page before the bad one
    assert c.err == b"pagerfs: /big: page %d: IO_DATA_INTEGRITY\n" % page

    with Image.open(image) as img:
        ino = img.resolve("big")
        with pytest.raises(IntegrityError) as caught:
            img.read_pages(ino, page, 1)
        err = caught.value
        assert (err.path, err.first_page, err.last_page, err.pages) == (b"/big", page, page, {page})
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, page // PAGES_PER_CHUNK)
        assert caught.value.pages == {page}
        # Every other page still reads, byte for byte, even those of the same chunk.
        for p in range(-(-len(source) // 4096)):
            if p != page:
                assert img.read_pages(ino, p, 1) == source[p * 4096 : (p + 1) * 4096]
        cp = img.read_chunk_pages(ino, page // PAGES_PER_CHUNK, 0, 1 << 30)
        assert cp.bad == {page} and cp.good() == [p for p in cp.verified if p != page]


def damage_lines(out: bytes) -> dict[bytes, set[int]]:
    damaged: dict[bytes, set[int]] = {}
    for line in out.splitlines():
        path, pages = line.split(b": pages ")
        a, b = map(int, pages.split(b"-")[:2])
        damaged.setdefault(path, set()).update(range(a, b + 1))
    return damaged


@pytest.mark.parametrize("path, page, seed", [("text", 20, 3), ("text", 0, 4), ("big", 163, 5)])
def test_corrupt_compressed_block_fails_its_pages_and_verify_agrees(path, page, seed, tree, image, cli):
    # An lz4 block: a changed byte breaks decoding (all the block's pages fail) or
    # changes a literal that later matches may copy (some pages fail). Either way what
    # corrupt reports, verify finds and readers fail, and every other page reads right.
    r = cli(["corrupt", str(image), "/" + path, "--page", str(page), "--seed", str(seed)])
    assert r.rc == 0, r.err
    v = cli(["verify", str(image)])
    assert v.rc == 1 and [line.rsplit(b": ", 1)[0] for line in v.out.splitlines()] == r.out.splitlines()
    damaged = damage_lines(r.out)
    assert page in damaged[b"/" + path.encode()]
    with Image.open(image) as img:
        for name in ("big", "text", "d/small-a", "d/small-b"):
            source = (tree / name).read_bytes()
            ino = img.resolve(name)
            bad = damaged.get(b"/" + name.encode(), set())
            for p in range(-(-len(source) // 4096)):
                if p in bad:
                    with pytest.raises(IntegrityError) as caught:
                        img.read_pages(ino, p, 1)
                    assert p in caught.value.pages <= bad
                else:
                    assert img.read_pages(ino, p, 1) == source[p * 4096 : (p + 1) * 4096]


def test_shared_fragment_damages_every_file_in_it(image, cli):
    # Small files live in one shared block, so damaging one damages its neighbours,
    # and both commands say so.
    r = cli(["corrupt", str(image), "d/small-a", "--page", "0"])
    assert r.rc == 0
    assert b"/d/small-a: pages 0-0" in r.out.splitlines()
    v = cli(["verify", "--json", str(image)])
    report = json.loads(v.out)
    assert v.rc == 1 and report["status"] == "damaged"
    found = {(d["path"], d["first_page"], d["last_page"], d["error"]) for d in report["damage"]}
    said = set()
    for line in r.out.splitlines():
        path, pages = line.split(b": pages ")
        a, b = pages.split(b"-")
        said.add((path.decode(), int(a), int(b), "IO_DATA_INTEGRITY"))
    assert found == said


def test_clean_image_verifies_clean(pristine, cli):
    v = cli(["verify", str(pristine)])
    assert (v.rc, v.err) == (0, b"")
    report = json.loads(cli(["verify", "--json", str(pristine)]).out)
    assert report["status"] == "clean" and report["damage"] == []


def flip_at(i: int):
    return lambda b: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def test_tamper_goes_through_the_real_check(pristine, tree):
    source = (tree / "big").read_bytes()
    with Image.open(pristine) as img:
        ino = img.resolve("big")
        assert img.read_chunk(ino, 2, tamper=lambda b: b) == source[2 * CHUNK : 3 * CHUNK]
        # Stored raw: a byte of page 3 of the chunk fails file page 32 + 3 alone.
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 2, tamper=flip_at(3 * 4096 + 10))
        assert (caught.value.first_page, caught.value.last_page, caught.value.pages) == (35, 35, {35})
        # Two pages apart: the span covers both, `pages` names only them.
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 2, tamper=lambda b: flip_at(40000)(flip_at(5)(b)))
        assert (caught.value.first_page, caught.value.last_page, caught.value.pages) == (32, 41, {32, 41})
        # A wrong length is nothing usable: every page of the chunk.
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 2, tamper=lambda b: b[:-1])
        assert caught.value.pages == frozenset(range(32, 48))
        with pytest.raises(IntegrityError):
            img.read_chunk_pages(ino, 2, 40, 1, tamper=lambda b: b[:-1])
        assert img.read_chunk(ino, 2) == source[2 * CHUNK : 3 * CHUNK]


def test_read_chunk_pages_hashes_only_what_it_is_asked(pristine, tree):
    source = (tree / "big").read_bytes()
    with Image.open(pristine) as img:
        ino = img.resolve("big")
        bad_page_3 = flip_at(3 * 4096)
        # Damage outside the pages asked for is not looked at, so not reported...
        cp = img.read_chunk_pages(ino, 2, 36, 4, tamper=bad_page_3)
        assert isinstance(cp, ChunkPages)
        assert (cp.first_page, cp.verified, cp.bad) == (32, range(36, 40), frozenset())
        assert cp.page(37) == source[37 * 4096 : 38 * 4096]
        with pytest.raises(ValueError):
            cp.page(35)  # not verified: its bytes may not be used
        # ...and damage inside them is, without raising.
        cp = img.read_chunk_pages(ino, 2, 30, 6, tamper=bad_page_3)
        assert (cp.verified, cp.bad) == (range(32, 36), frozenset({35}))
        assert cp.good() == [32, 33, 34]
        assert len(cp.data) == CHUNK and cp.data != source[2 * CHUNK : 3 * CHUNK]
        # The short last chunk: the range is clipped at EOF.
        last = len(img.chunk_range(ino, 0, 1 << 30)) - 1
        cp = img.read_chunk_pages(ino, last, 0, 1 << 30)
        npages = -(-len(source) // 4096)
        assert cp.verified == range(last * PAGES_PER_CHUNK, npages) and cp.bad == frozenset()
        assert cp.data == source[last * CHUNK :]
        assert img.read_chunk_pages(ino, last, 0, 3).verified == range(160, 160)
        with pytest.raises(ValueError):
            img.read_chunk_pages(ino, 0, -1, 2)


def test_unreadable_image_is_an_io_error_naming_the_pages(image):
    with Image.open(image) as img:
        ino = img.resolve("big")
        os.truncate(image, 1000)  # the image shrinks under an open reader
        with pytest.raises(StoreIOError) as caught:
            img.read_chunk(ino, 10)
        assert (caught.value.path, caught.value.first_page, caught.value.last_page) == (b"/big", 160, 163)
        assert caught.value.pages == {160, 161, 162, 163}
        with pytest.raises(StoreIOError):
            img.read_chunk_pages(ino, 10, 161, 1)


def test_corrupt_rejects_bad_requests(image, pristine, cli):
    for args in (["/big", "--page", "9999"], ["/nope", "--page", "0"], ["/d", "--page", "0"]):
        r = cli(["corrupt", str(image), *args])
        assert r.rc == 2, args
        assert r.err.startswith(b"pagerfs: ") and len(r.err.splitlines()) == 1, r.err
    r = cli(["corrupt", str(image), "/big", "--page", "-1"])
    assert r.rc == 2 and b"not a page number" in r.err
    assert image.read_bytes() == pristine.read_bytes()


def test_two_threads_read_in_parallel_and_agree(pristine, tree):
    source = (tree / "big").read_bytes()
    results: dict[int, list[bytes]] = {}
    with Image.open(pristine) as img:
        ino = img.resolve("big")
        n = len(img.chunk_range(ino, 0, 1 << 20))

        def reader(k: int) -> None:
            results[k] = [img.read_chunk(ino, i) for _ in range(20) for i in range(n)]

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    expected = [source[i * CHUNK : (i + 1) * CHUNK] for _ in range(20) for i in range(n)]
    assert results[0] == results[1] == expected


def test_fragment_cache_never_hides_injected_damage(pristine, tree):
    with Image.open(pristine) as img:
        ino = img.resolve("d/small-b")
        want = (tree / "d" / "small-b").read_bytes()
        assert img.read_chunk(ino, 0) == want
        assert img.read_chunk(ino, 0) == want  # now served from the cache
        with pytest.raises(IntegrityError):
            img.read_chunk(ino, 0, tamper=lambda b: bytes([b[i] ^ 0xFF for i in range(len(b))]))
        assert img.read_chunk(img.resolve("d/small-a"), 0) == (tree / "d" / "small-a").read_bytes()


def touching(offset: int, length: int, fragment_page: int) -> set[int]:
    """The pages of a tail of `length` bytes at `offset` in its fragment that hold bytes
    of the fragment's page `fragment_page`."""
    lo, hi = fragment_page * 4096, (fragment_page + 1) * 4096
    return {k for k in range(-(-length // 4096))
            if offset + k * 4096 < hi and lo < offset + min((k + 1) * 4096, length)}


def test_fragment_cache_holds_unverified_blocks_and_every_read_verifies(pristine, tree):
    # The cache keeps decompressed bytes; a read still checks its pages against the
    # table, so bytes damaged while cached are caught by the next read.
    with Image.open(pristine) as img:
        ino = img.resolve("d/small-b")
        want = (tree / "d" / "small-b").read_bytes()
        assert img.read_chunk(ino, 0) == want
        block, offset, _, _ = img._chunk_entry(ino, 0)
        cached = img._cache[block]
        img._cache[block] = cached[: offset + 5000] + b"!" + cached[offset + 5001 :]
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 0)
        # byte 5000 is in the file's page 1; its fragment page may hold bytes of page 0 too
        bad = touching(offset, len(want), (offset + 5000) // 4096)
        assert 1 in bad and caught.value.pages == bad
        assert img.read_pages(ino, 2, 1) == want[8192:]


def test_damage_to_a_fragment_page_fails_exactly_the_tails_in_it(pristine, tree, image, forge):
    # A fragment's page hashes are its own pages', as a disk's sectors: a bad one fails
    # every page of every tail that has bytes in that fragment page, and nothing else.
    reseal, tables_of = forge
    want = {n: (tree / "d" / n).read_bytes() for n in ("small-a", "small-b")}
    with Image.open(pristine) as img:
        a, b = img.resolve("d/small-a"), img.resolve("d/small-b")
        block, offset_a, _, _ = img._chunk_entry(a, 0)
        block_b, offset_b, _, _ = img._chunk_entry(b, 0)
        assert block == block_b and offset_a != offset_b  # one fragment, two tails
        page = (offset_b + 4096) // 4096  # the fragment page of small-b's byte 4096
        at = (img._block_hash[block] + page) * 32
    hashes = bytearray(tables_of(image)["pagehashes"])
    hashes[at] ^= 0x80
    reseal(image, {"pagehashes": bytes(hashes)})
    bad = {"small-a": touching(offset_a, 3000, page), "small-b": touching(offset_b, 9000, page)}
    assert 1 in bad["small-b"] and 2 not in bad["small-b"]
    with Image.open(image) as img:
        for name in ("small-a", "small-b"):
            ino = img.resolve("d/" + name)
            if not bad[name]:
                assert img.read_chunk(ino, 0) == want[name]
                continue
            with pytest.raises(IntegrityError) as caught:
                img.read_chunk(ino, 0)
            assert caught.value.pages == bad[name]
        cp = img.read_chunk_pages(b, 0, 0, 3)
        assert (cp.verified, cp.bad) == (range(0, 3), frozenset(bad["small-b"]))
        assert cp.page(2) == want["small-b"][8192:]
        # Served from the fragment cache now: still checked, page by page.
        assert img.read_pages(b, 2, 1) == want["small-b"][8192:]
        with pytest.raises(IntegrityError):
            img.read_pages(b, 1, 1)
        report = scrub(img)
    assert sorted((d.path, d.first_page, d.last_page) for d in report.damage) == sorted(
        (b"/d/" + n.encode(), min(p), max(p)) for n, p in bad.items() if p)
