"""The fs-verity digest must equal what the real `fsverity digest` prints."""

from __future__ import annotations

import random

import pytest

from pagerfs.store.verity import block_hashes, digest_from_level0, fsverity_digest

# Sizes around every boundary of the Merkle tree: one block, one level (128 hashes
# per 4 KiB block), two levels, three levels.
SIZES = [0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 3 * 128 * 4096 + 77,
         128 * 128 * 4096, 128 * 128 * 4096 + 4097]


@pytest.mark.parametrize("size", SIZES)
def test_digest_matches_fsverity_tool(tmp_path, real_fsverity, size):
    rng = random.Random(size)
    path = tmp_path / "f"
    # Large sizes are mostly sparse zeros (quick to write), with random bytes at the ends.
    with open(path, "wb") as f:
        head = rng.randbytes(min(size, 9000))
        f.write(head)
        f.truncate(size)
        if size > 20000:
            f.seek(size - 5000)
            f.write(rng.randbytes(5000))
    data = path.read_bytes()
    expected = real_fsverity([bytes(path)])[bytes(path)]
    assert fsverity_digest(data) == expected


def test_piecewise_level0_equals_whole():
    data = random.Random(1).randbytes(3 * 65536 + 1000)
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    level0 = b"".join(block_hashes(p) for p in pieces)
    assert digest_from_level0(level0, len(data)) == fsverity_digest(data)


def test_digest_is_computed_from_page_hashes_and_tails_when_asked(tmp_path):
    # Format 5 stores no digest: a full chunk's block page hashes are the file's
    # leaves, a tail in a fragment is read (verified) and hashed, zero padded. The
    # result is what the file's own leaves give, kept once computed, and a damaged tail
    # fails it rather than giving a digest of damaged bytes.
    from pagerfs.store import Image, IntegrityError, build_image
    from pagerfs.store import format as fmt

    rng = random.Random(5)
    tree = tmp_path / "tree"
    tree.mkdir()
    files = {"big": rng.randbytes(3 * 16384 + 5000), "text": b"page " * 9000,
             "one": b"x", "two-pages": rng.randbytes(4097), "page": rng.randbytes(4096),
             "empty": b""}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    image = tmp_path / "img"
    build_image(tree, image, chunk_size=16384)
    with Image.open(image) as img:
        for name, data in files.items():
            ino = img.resolve(name)
            size = img.stat(ino).size
            for index in range(size // 16384):  # full chunks: the leaves are stored
                block, offset, _, _ = img._chunk_entry(ino, index)
                at = img._block_hash[block] * fmt.PAGE_HASH
                assert offset == 0 and img._page_hashes[at : at + 4 * fmt.PAGE_HASH] == \
                    block_hashes(data[index * 16384 : (index + 1) * 16384])
            assert img.fsverity_digest(ino) == fsverity_digest(data), name
            assert digest_from_level0(block_hashes(data), size) == fsverity_digest(data)
            assert ino in img._digests
        one = img.resolve("one")
        block, offset, _, _ = img._chunk_entry(one, 0)
    raw = bytearray(image.read_bytes())
    # "one" is a 1-byte tail in a fragment: damage the stored block it is in.
    with Image.open(image) as img:
        off, stored, length = img._blocks[block]
    assert stored == length  # raw (random bytes do not compress): byte for byte
    raw[off + offset] ^= 1
    image.write_bytes(bytes(raw))
    with Image.open(image) as img:
        with pytest.raises(IntegrityError):
            img.fsverity_digest(img.resolve("one"))


@pytest.mark.parametrize("seed", range(6))
def test_root_hash_of_runs_equals_the_root_of_the_leaves_spelled_out(seed):
    # Runs of one repeated hash (a hole's leaves) around and between literal hashes,
    # across block boundaries of every level: the same root as the leaves themselves.
    from pagerfs.store.verity import ZERO_PAGE_HASH, root_hash, root_hash_of_runs

    rng = random.Random(seed)
    runs, flat = [], b""
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.5:
            lit = rng.randbytes(32 * rng.choice([1, 127, 128, 129, 300]))
            runs.append(lit)
            flat += lit
        else:
            n = rng.choice([1, 127, 128, 129, 128 * 128 + 3, 40000])
            runs.append((ZERO_PAGE_HASH, n))
            flat += ZERO_PAGE_HASH * n
    assert root_hash_of_runs(runs) == root_hash(flat)
