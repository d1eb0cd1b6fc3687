"""fs-verity file digests: SHA-256 Merkle tree over 4 KiB blocks, no salt.

The value equals what `fsverity digest FILE` prints: the SHA-256 of the 256-byte
fs-verity descriptor that holds the Merkle root hash and the file size.
"""

from __future__ import annotations

import struct
from hashlib import sha256

from pagerfs.store.codec import native

BLOCK = 4096
_HASH = 32
_ZERO_BLOCK = bytes(BLOCK)
# version, hash algorithm (1 = SHA-256), log2 block size, salt size, signature size,
# data size, root hash (64 bytes, zero padded), salt (32), reserved (144).
_DESCRIPTOR = struct.Struct("<BBBBIQ64s32s144s")


def block_hashes(data: bytes | memoryview) -> bytes:
    """The level-0 hashes of `data` (its last block zero padded), concatenated.

    Callers may hash a file piece by piece as long as every piece but the last is a
    multiple of 4 KiB long, and concatenate the results. One native call, without the GIL.
    """
    return native.hash_pages(data)


def _pad(level: bytes) -> bytes:
    rest = len(level) % BLOCK
    return level + _ZERO_BLOCK[: BLOCK - rest] if rest else level


def root_hash(level0: bytes) -> bytes:
    """The Merkle root over level-0 hashes: hash each level's blocks until one hash remains.

    A file of one block has no tree at all: its root hash is that block's hash.
    """
    if not level0:
        return bytes(_HASH)  # an empty file has no tree; fs-verity defines its root as zeros
    level = level0
    while len(level) > _HASH:
        level = block_hashes(_pad(level))
    return level


def digest_from_level0(level0: bytes, size: int) -> bytes:
    descriptor = _DESCRIPTOR.pack(1, 1, 12, 0, 0, size, root_hash(level0), b"", b"")
    return sha256(descriptor).digest()


def fsverity_digest(data: bytes | memoryview) -> bytes:
    """The fs-verity digest of a whole file's contents."""
    return digest_from_level0(block_hashes(data), len(data))


# ---- sparse files: level-0 hashes as runs ------------------------------------------
#
# A hole of n pages has n equal leaves (the hash of a zero page), so a whole block of
# them hashes to one value per level, and a 1 TiB hole is a few dozen hash calls, not
# 268 million. A level is a list of runs: bytes (hashes, concatenated) or (hash, n),
# n copies of one hash.

Run = bytes | tuple[bytes, int]
ZERO_PAGE_HASH = sha256(_ZERO_BLOCK).digest()
_PER_BLOCK = BLOCK // _HASH  # hashes per block of the next level


def _count(runs: list[Run]) -> int:
    return sum(len(r) // _HASH if isinstance(r, bytes) else r[1] for r in runs)


def _next_level(runs: list[Run], memo: dict[bytes, bytes]) -> list[Run]:
    out: list[Run] = []
    partial = bytearray()  # hashes of the next block not yet full

    def emit_full() -> None:
        whole = len(partial) - len(partial) % BLOCK
        if whole:
            out.append(block_hashes(bytes(partial[:whole])))
            del partial[:whole]

    for run in runs:
        if isinstance(run, bytes):
            partial += run
            emit_full()
            continue
        h, n = run
        if partial:  # complete the block under way first
            take = min(n, (BLOCK - len(partial)) // _HASH)
            partial += h * take
            n -= take
            emit_full()
        if n >= _PER_BLOCK:
            if h not in memo:
                memo[h] = sha256(h * _PER_BLOCK).digest()
            out.append((memo[h], n // _PER_BLOCK))
            n %= _PER_BLOCK
        partial += h * n
    if partial:
        out.append(block_hashes(bytes(partial) + _ZERO_BLOCK[: -len(partial) % BLOCK]))
    return out


def root_hash_of_runs(runs: list[Run]) -> bytes:
    """root_hash of the level-0 hashes the runs stand for, without spelling them out."""
    level = [r for r in runs if (r if isinstance(r, bytes) else r[1])]
    if not level:
        return bytes(_HASH)
    memo: dict[bytes, bytes] = {}
    while _count(level) > 1:
        level = _next_level(level, memo)
    only = level[0]
    return only if isinstance(only, bytes) else only[0]


def digest_from_runs(runs: list[Run], size: int) -> bytes:
    """The fs-verity digest of a file of `size` bytes whose level-0 hashes are `runs`."""
    descriptor = _DESCRIPTOR.pack(1, 1, 12, 0, 0, size, root_hash_of_runs(runs), b"", b"")
    return sha256(descriptor).digest()
