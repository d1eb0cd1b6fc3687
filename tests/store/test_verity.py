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
