"""Damage a chunk, and every reader must see exactly the pages of that chunk fail."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import pytest

from pagerfs.store import Image, IntegrityError, StoreIOError, build_image

CHUNK = 64 * 1024
PAGES_PER_CHUNK = CHUNK // 4096


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c") / "tree"
    root.mkdir()
    rng = random.Random(3)
    (root / "big").write_bytes(rng.randbytes(10 * CHUNK + 3 * 4096 + 100))  # 11 chunks
    (root / "d").mkdir()
    (root / "d" / "small-a").write_bytes(rng.randbytes(3000))
    (root / "d" / "small-b").write_bytes(rng.randbytes(9000))
    return root


@pytest.fixture(scope="module")
def pristine(tree, tmp_path_factory) -> Path:
    image = tmp_path_factory.mktemp("c") / "p.img"
    build_image(tree, image, chunk_size=CHUNK)
    return image


@pytest.fixture
def image(pristine, tmp_path) -> Path:
    copy = tmp_path / "img"
    shutil.copyfile(pristine, copy)
    return copy


def expected_range(page: int, size: int) -> tuple[int, int]:
    npages = -(-size // 4096)
    first = page // PAGES_PER_CHUNK * PAGES_PER_CHUNK
    return first, min(first + PAGES_PER_CHUNK, npages) - 1


@pytest.mark.parametrize("page", [0, 5, 16, 47, 160, 163])
def test_corrupt_then_verify_and_cat_fail_at_exactly_that_chunk(page, tree, image, cli, cli_subprocess):
    source = (tree / "big").read_bytes()
    first, last = expected_range(page, len(source))
    r = cli_subprocess(["corrupt", str(image), "/big", "--page", str(page), "--seed", str(page)])
    assert r.rc == 0, r.err
    assert b"/big: pages %d-%d" % (first, last) in r.out.splitlines()

    v = cli(["verify", str(image)])
    assert v.rc == 1
    lines = v.out.splitlines()
    assert b"/big: pages %d-%d: IO_DATA_INTEGRITY" % (first, last) in lines
    # What corrupt said is damaged is exactly what verify finds.
    assert [line.rsplit(b": ", 1)[0] for line in lines] == r.out.splitlines()
    assert v.err.startswith(b"pagerfs: ") and len(v.err.splitlines()) == 1

    c = cli(["cat", str(image), "big"])
    assert c.rc == 1
    assert c.out == source[: first * 4096]
    assert c.err == b"pagerfs: /big: page %d: IO_DATA_INTEGRITY\n" % first

    with Image.open(image) as img:
        ino = img.resolve("big")
        with pytest.raises(IntegrityError) as caught:
            img.read_pages(ino, page, 1)
        assert (caught.value.path, caught.value.first_page, caught.value.last_page) == (b"/big", first, last)
        # Every other page still reads, byte for byte.
        for p in range(0, -(-len(source) // 4096), PAGES_PER_CHUNK):
            if p != first:
                assert img.read_pages(ino, p, PAGES_PER_CHUNK) == source[p * 4096 : (p + PAGES_PER_CHUNK) * 4096]


def test_shared_fragment_damages_every_file_in_it(image, cli):
    # Small files live in one shared block, so damaging one damages its neighbours,
    # and both commands say so.
    r = cli(["corrupt", str(image), "d/small-a", "--page", "0"])
    assert r.rc == 0
    assert set(r.out.splitlines()) >= {b"/d/small-a: pages 0-0", b"/d/small-b: pages 0-2"}
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


def test_tamper_goes_through_the_real_check(pristine, tree):
    source = (tree / "big").read_bytes()
    with Image.open(pristine) as img:
        ino = img.resolve("big")
        assert img.read_chunk(ino, 2, tamper=lambda b: b) == source[2 * CHUNK : 3 * CHUNK]
        flip = lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:]  # noqa: E731
        with pytest.raises(IntegrityError) as caught:
            img.read_chunk(ino, 2, tamper=flip)
        assert (caught.value.first_page, caught.value.last_page) == (32, 47)
        with pytest.raises(IntegrityError):
            img.read_chunk(ino, 2, tamper=lambda b: b[:-1])
        assert img.read_chunk(ino, 2) == source[2 * CHUNK : 3 * CHUNK]


def test_unreadable_image_is_an_io_error_naming_the_pages(image):
    with Image.open(image) as img:
        ino = img.resolve("big")
        os.truncate(image, 1000)  # the image shrinks under an open reader
        with pytest.raises(StoreIOError) as caught:
            img.read_chunk(ino, 10)
        assert (caught.value.path, caught.value.first_page, caught.value.last_page) == (b"/big", 160, 163)


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
        assert img.read_chunk(ino, 0) == want  # now served from the verified cache
        with pytest.raises(IntegrityError):
            img.read_chunk(ino, 0, tamper=lambda b: bytes([b[0] ^ 0xFF]) + b[1:])
        assert img.read_chunk(img.resolve("d/small-a"), 0) == (tree / "d" / "small-a").read_bytes()
