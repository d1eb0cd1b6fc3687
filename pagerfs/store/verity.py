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
